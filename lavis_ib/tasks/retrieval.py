"""`retrieval`: image-text retrieval recall, evaluated as LAVIS does (BLIP-2 paper Sec. 4.4).

Retrieval scores a whole gallery at once rather than sample by sample, so the task scores
the split before its first batch and reports per image (datasets, settings and the model
members it needs: `RetrievalTask`)."""
from __future__ import annotations

import dataclasses
import difflib
import logging
from typing import Any, Mapping

import torch

from lavis_ib.common.containers import to_plain
from lavis_ib.common.errors import ConfigError, DataError, LavisIbError
from lavis_ib.common.registry import registry
from lavis_ib.tasks.eval_settings import ALL_EVAL_KEYS, EvalSettings, check_misspelt_keys
from lavis_ib.tasks.eval_task import EvalTask
from lavis_ib.tasks.metrics.retrieval import METRIC_NAMES, recall_metrics
from lavis_ib.tasks.retrieval_scoring import GalleryRanks, RetrievalSettings, score_gallery

logger = logging.getLogger(__name__)
MODEL_METHODS = ("retrieval_image_features", "retrieval_text_features", "itm_match_logit")
SETTING_KEYS = tuple(f.name for f in dataclasses.fields(RetrievalSettings))


def _device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    params = getattr(model, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    return first.device if first is not None else torch.device("cpu")


@registry.register_task("retrieval")
class RetrievalTask(EvalTask):
    """Image->text and text->image retrieval over a split's images and captions.

    Datasets: COCO (5K test) and Flickr30K (1K test), Karpathy splits (``coco_retrieval``,
    ``flickr30k_retrieval``). The whole split is scored once per evaluation, before its
    first batch (`before_evaluation`, lavis_ib.tasks.retrieval_scoring: ITC similarity of
    every pair, the top `k_test` of each query re-ranked by ITM + ITC); `valid_step` then
    writes one record per image and `metrics` turns the ranks into recall@1/5/10 both ways
    under LAVIS's names.

    Settings (dataset entry keys): ``k_test`` (128), ``text_max_length`` (35 tokens),
    ``feature_batch_size`` (32 images), ``text_batch_size`` (256), ``feature_workers`` (2),
    ``offload_image_embeds`` (false); ``eval_splits``. ``eval_subset`` is refused: a subset
    of queries would still need the whole gallery scored. Model contract:
    `retrieval_image_features`, `retrieval_text_features`, `itm_match_logit` (signatures
    in lavis_ib.tasks.retrieval_scoring.GalleryScorer).

    Records (one per image): ``{"id", "image_id", "index", "txt_rank", "img_ranks",
    "top_texts"}``: ranks are 1-based (txt_rank: the image's best caption; img_ranks: the
    image's rank for each of its captions), top_texts the first 5 retrieved captions.
    Metrics: txt_r1/5/10, txt_r_mean, img_r1/5/10, img_r_mean, r_mean (percent), and
    num_images / num_texts scored.
    """

    NAME = "retrieval"
    INFERENCE = ()
    EVAL_KEYS = frozenset({"eval_splits"})
    METRIC_NAMES = METRIC_NAMES + ("num_images", "num_texts", "num_samples")

    def __init__(self, cfg: Any = None, dataset_name: str | None = None,
                 settings: EvalSettings | Mapping[str, Any] | None = None,
                 retrieval: RetrievalSettings | None = None) -> None:
        super().__init__(cfg, dataset_name, settings)
        self.retrieval = retrieval or RetrievalSettings()
        self.result: GalleryRanks | None = None
        self._texts: list[str] = []
        self._img2txt: list[list[int]] = []

    settings = property(lambda self: {**dataclasses.asdict(self.retrieval),
                                      **({"eval_splits": self.eval_settings.eval_splits}
                                         if self.eval_settings.eval_splits is not None else {})},
                        doc="the retrieval settings, as a dict")

    @classmethod
    def for_dataset(cls, name: str, dataset_cfg: Any = None,
                    model_cls: type | None = None) -> "RetrievalTask":
        """The task of dataset `name` with its entry's retrieval settings.

        Raises:
            ConfigError: a generation/ranking setting, `eval_subset`, a bad value, or a
                model class without the retrieval methods.
        """
        given = to_plain(dataset_cfg) or {}
        if not isinstance(given, Mapping):
            raise ConfigError(f"datasets.{name} must be a mapping; got {given!r}.")
        check_misspelt_keys(name, given)
        if given.get("eval_subset"):
            raise ConfigError(f"datasets.{name}.eval_subset: retrieval scores every image against "
                              f"every caption of the split, so a subset saves nothing; remove it "
                              f"(or evaluate a smaller split).")
        for key in given:   # settings of generation / ranking tasks would be ignored here
            if key in ALL_EVAL_KEYS and key not in cls.EVAL_KEYS:
                raise ConfigError(f"datasets.{name}.{key}: the '{cls.NAME}' task does not read "
                                  f"'{key}'; it reads {', '.join(sorted(cls.EVAL_KEYS))} and "
                                  f"{', '.join(SETTING_KEYS)}.")
        retrieval = cls.read_settings(name, given)
        if model_cls is not None:
            missing = [m for m in MODEL_METHODS if not callable(getattr(model_cls, m, None))]
            if missing:
                raise ConfigError(
                    f"datasets.{name}.task: retrieval needs a model with {', '.join(MODEL_METHODS)} "
                    f"(BLIP-2 stage 1, arch blip2); {model_cls.__name__} lacks {', '.join(missing)}.")
        base = {"eval_splits": given["eval_splits"]} if "eval_splits" in given else {}
        return cls(dataset_cfg, dataset_name=name, settings=EvalSettings.from_mapping(name, base),
                   retrieval=retrieval)

    @classmethod
    def read_settings(cls, name: str, given: Mapping[str, Any]) -> RetrievalSettings:
        """The entry's retrieval settings, checked (a near-miss key is an error, not ignored)."""
        for key in given:
            close = difflib.get_close_matches(str(key), SETTING_KEYS, n=1, cutoff=0.75)
            if key not in SETTING_KEYS and close:
                raise ConfigError(f"datasets.{name}.{key}: not a retrieval setting. Did you mean "
                                  f"'{close[0]}'? Settings: {', '.join(SETTING_KEYS)}.")
        values = {k: given[k] for k in SETTING_KEYS if given.get(k) is not None}
        for key, value in values.items():
            if key == "offload_image_embeds":
                if not isinstance(value, bool):
                    raise ConfigError(f"datasets.{name}.{key} must be true or false; got {value!r}.")
                continue
            least = 0 if key == "feature_workers" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"datasets.{name}.{key} must be an integer >= {least}; got {value!r}.")
        return RetrievalSettings(**values)

    def metric_names(self) -> frozenset[str]:
        return frozenset(self.METRIC_NAMES)

    # -- evaluation -----------------------------------------------------------------------
    def before_evaluation(self, model: Any, dataset: Any) -> None:
        """Scores the whole split (every rank takes part: collective)."""
        for attr in ("text", "img2txt", "txt2img"):
            if not hasattr(dataset, attr):
                raise DataError(f"{self.dataset_name}: the retrieval task needs a retrieval dataset "
                                f"(text, img2txt, txt2img); {type(dataset).__name__} has no '{attr}'.")
        self._texts = list(dataset.text)
        self._img2txt = [list(t) for t in dataset.img2txt]
        self.result = score_gallery(model, dataset, self.retrieval, _device(model),
                                    where=str(self.dataset_name))

    def valid_step(self, model: Any, samples: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One record per image, read from the scored split (no model call)."""
        self.require(samples, "index")
        if self.result is None:
            raise LavisIbError(f"{self.dataset_name}: retrieval records before the split was scored "
                               f"(the evaluation loop calls before_evaluation first).")
        ids = self.sample_ids(samples)
        image_ids = samples.get("image_id", ids)
        records = []
        for sample_id, image_id, index in zip(ids, image_ids, samples["index"]):
            index = int(index)
            if index not in self.result.txt_rank:
                raise LavisIbError(f"{self.dataset_name}: image {index} was not scored.")
            records.append({"id": sample_id, "image_id": _scalar(image_id), "index": index,
                            "txt_rank": self.result.txt_rank[index] + 1,
                            "img_ranks": [self.result.img_rank[t] + 1 for t in self._img2txt[index]],
                            "top_texts": [self._texts[t] for t in self.result.top_texts[index]]})
        return records

    def compute_metrics(self, records: list[dict[str, Any]]) -> dict[str, float]:
        txt = [int(r["txt_rank"]) - 1 for r in records]
        img = [int(x) - 1 for r in records for x in r["img_ranks"]]
        out = recall_metrics(txt, img)
        out.update(num_images=len(txt), num_texts=len(img))
        return out


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value

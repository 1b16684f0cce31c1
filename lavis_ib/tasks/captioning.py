"""`captioning`: generate one caption per image; CIDEr, BLEU-4, METEOR (SPICE optional).

The held-out caption benchmarks (NoCaps, Flickr30K) and the held-in validation sets, scored
by the COCO caption protocol the paper reports (datasets, keys, settings: `CaptioningTask`)."""
from __future__ import annotations

from typing import Any, Mapping

from lavis_ib.common.errors import ConfigError
from lavis_ib.common.registry import registry
from lavis_ib.tasks.metrics.caption import caption_scores
from lavis_ib.tasks.eval_task import EvalTask


@registry.register_task("captioning")
class CaptioningTask(EvalTask):
    """Caption generation with the COCO caption metrics (x100).

    Datasets: NoCaps, Flickr30K (held-out), COCO Caption, TextCaps (held-in validation).
    Sample keys: ``image``, ``instance_id`` (or ``image_id``), ``references`` (list[str]);
    TextCaps adds ``ocr_tokens``. Prompt placeholders (documented order): OCR tokens.

    Settings: ``prompt``, ``generate`` (default beam 5, max 80, min 10), ``metric``:
    ``coco`` (BLEU-4, METEOR, CIDEr; default), ``coco+spice`` (adds SPICE, slow),
    ``bleu_cider`` (no METEOR: its Java process takes seconds to start, which frequent
    validation during training can skip).

    Records: ``{"id", "image_id", "caption", "references"}``.
    """

    NAME = "captioning"
    INFERENCE = ("generate",)
    PROMPT_FIELDS = ("ocr_tokens",)
    EVAL_KEYS = EvalTask.EVAL_KEYS | {"metric"}
    METRICS = ("coco", "coco+spice", "bleu_cider")
    DEFAULTS_FROM = "coco_caption"

    @classmethod
    def _check_settings(cls, name: str, settings: dict[str, Any],
                        given: Mapping[str, Any]) -> None:
        super()._check_settings(name, settings, given)
        metric = settings.setdefault("metric", "coco")
        if metric not in cls.METRICS:
            raise ConfigError(f"datasets.{name}.metric: '{metric}' is not a captioning metric "
                              f"set; use {' or '.join(cls.METRICS)}.")

    def metric_names(self) -> frozenset[str]:
        metric = self.settings.get("metric", "coco")
        names = {"bleu4", "cider", "num_samples"} | ({"meteor"} if metric != "bleu_cider" else set())
        return frozenset(names | ({"spice"} if metric == "coco+spice" else set()))

    def valid_step(self, model: Any, samples: Mapping[str, Any]) -> list[dict[str, Any]]:
        self.require(samples, "references")
        ids = self.sample_ids(samples)
        captions = self.run_generate(model, samples)
        image_ids = samples.get("image_id", ids)
        return [{"id": i, "image_id": _scalar(img), "caption": c,
                 "references": [str(r) for r in refs]}
                for i, img, c, refs in zip(ids, image_ids, captions, samples["references"])]

    def compute_metrics(self, records: list[dict[str, Any]]) -> dict[str, float]:
        preds = {str(r["id"]): r["caption"] for r in records}
        refs = {str(r["id"]): r["references"] for r in records}
        metric = self.settings["metric"]
        scores = caption_scores(preds, refs, spice=metric == "coco+spice",
                                meteor=metric != "bleu_cider")
        scores["num_samples"] = len(records)
        return scores


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value

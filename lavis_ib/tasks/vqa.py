"""`vqa` and `gqa`: open-ended question answering, by generation or by ranking a vocabulary.

One answer task for every open-ended VQA dataset, whose settings choose generation or
ranking and the published accuracy rule (datasets, keys and settings: `AnswerTask`)."""
from __future__ import annotations

import logging
from typing import Any, Mapping

from lavis_ib.common.config import builder_name
from lavis_ib.common.errors import ConfigError, DataError, did_you_mean
from lavis_ib.common.registry import registry
from lavis_ib.tasks.eval_task import EvalTask
from lavis_ib.tasks.metrics.rank import best_first
from lavis_ib.tasks.metrics.vqa import ACCURACIES, aokvqa_official, mean_accuracy
from lavis_ib.tasks.submissions import server_split_metrics, write_submission

logger = logging.getLogger(__name__)


class AnswerTask(EvalTask):
    """Shared by `vqa`, `gqa` and `video_qa`: answers scored against ``answers``.

    Datasets: VQAv2, OKVQA, A-OKVQA (direct answer), OCR-VQA, TextVQA, VizWiz (`vqa`); GQA
    (`gqa`). Sample keys: ``image``, ``question_id``, ``question``, ``text_input`` (the
    normalised question), ``answers`` (all human answers); TextVQA/OCR-VQA add
    ``ocr_tokens``. Prompt placeholders (documented order): OCR tokens, then question (a
    prompt with one ``{}`` takes the question).

    Settings: ``inference`` (``generate`` default; ``rank`` with ``candidates:
    answer_list`` ranks the dataset's answer vocabulary), ``prompt``, ``generate``,
    ``append_eos`` (rank), ``metric``: ``vqa`` (official VQAv2 accuracy, default),
    ``aokvqa``, ``exact``, ``ivqa`` (see `lavis_ib.tasks.metrics.vqa`). Metrics:
    ``{"acc"}`` in percent; ``aokvqa`` adds ``acc_official`` (the A-OKVQA authors' scorer,
    which leaves out difficult questions).

    Records: ``{"id", "question", "answer", "answers"}``.
    """

    INFERENCE = ("generate", "rank")
    PROMPT_FIELDS = ("ocr_tokens", "question")
    EVAL_KEYS = EvalTask.EVAL_KEYS | {"append_eos", "aggregate", "candidates", "metric"}
    DEFAULT_METRIC = "vqa"
    METRIC_NAMES = ("acc", "num_samples")

    @classmethod
    def _check_settings(cls, name: str, settings: dict[str, Any],
                        given: Mapping[str, Any]) -> None:
        super()._check_settings(name, settings, given)
        metric = settings.setdefault("metric", cls.DEFAULT_METRIC)
        if metric not in ACCURACIES:
            raise ConfigError(f"datasets.{name}.metric: unknown accuracy '{metric}'."
                              f"{did_you_mean(str(metric), ACCURACIES)} Use one of "
                              f"{', '.join(ACCURACIES)}.")

    @classmethod
    def check_candidates(cls, name: str, candidates: Any) -> Any:
        if candidates is None:
            candidates = "answer_list"
        if candidates == "answer_list":
            return candidates
        if (isinstance(candidates, list) and candidates
                and all(isinstance(c, str) for c in candidates)):
            return candidates
        raise ConfigError(f"datasets.{name}.candidates: use 'answer_list' (the dataset's "
                          f"answer vocabulary) or a list of answer strings; got {candidates!r}.")

    def rank_candidates(self) -> list[str]:
        if isinstance(self.candidates, list):
            return self.candidates
        if self.answer_list is None:
            self.answer_list = self._answer_list_from_builder()
        return self.answer_list

    def _answer_list_from_builder(self) -> list[str]:
        """The vocabulary read through the dataset's builder, for an evaluation loop that
        does not call `before_evaluation` (the builder reads annotation files only)."""
        if not self.cfg or not self.dataset_name or "build_info" not in self.cfg:
            raise ConfigError(f"{self.dataset_name}: ranking over answer_list needs the "
                              f"dataset's vocabulary: call task.before_evaluation(model, "
                              f"dataset) first, or build the task from the dataset's config.")
        builder = registry.get_builder_class(builder_name(self.dataset_name, self.cfg))
        built = builder(self.cfg).build_datasets()
        for split in sorted(built, key=lambda s: s == "train"):   # eval splits first
            answer_list = getattr(built[split], "answer_list", None)
            if answer_list:
                logger.info("%s: %d ranking candidates from the dataset's answer_list",
                            self.dataset_name, len(answer_list))
                return [str(a) for a in answer_list]
        raise ConfigError(f"{self.dataset_name}: candidates: answer_list, but none of its "
                          f"splits ({', '.join(built)}) has an answer_list; set "
                          f"build_info.answer_list or give the candidates as a list.")

    def answers_for(self, model: Any, samples: Mapping[str, Any]) -> list[str]:
        if self.inference == "generate":
            return self.run_generate(model, samples)
        candidates = self.rank_candidates()
        scores, _ = self.run_rank(model, samples, candidates)
        return [candidates[int(order[0])] for order in best_first(scores)]

    def metric_names(self) -> frozenset[str]:
        official = {"acc_official"} if self.settings.get("metric") == "aokvqa" else set()
        return frozenset(self.METRIC_NAMES) | official

    def valid_step(self, model: Any, samples: Mapping[str, Any]) -> list[dict[str, Any]]:
        self.require(samples, "answers")
        ids = self.sample_ids(samples)
        answers = self.answers_for(model, samples)
        questions = samples.get("question", samples.get("text_input", [""] * len(ids)))
        records = [{"id": i, "question": str(q), "answer": a, "answers": [str(x) for x in gts]}
                   for i, q, a, gts in zip(ids, questions, answers, samples["answers"])]
        if "difficult_direct_answer" in samples:   # A-OKVQA: its scorer leaves these out
            for record, flag in zip(records, samples["difficult_direct_answer"]):
                record["difficult"] = bool(flag)
        return records

    def compute_metrics(self, records: list[dict[str, Any]]) -> dict[str, float]:
        scored = [r for r in records if r["answers"]]
        if not scored:
            # a split without public answers (VizWiz/VQAv2 test): predictions only
            logger.warning("%s: no ground-truth answers in this split; predictions written "
                           "for an evaluation server, no accuracy", self.dataset_name)
            return server_split_metrics(len(records))
        if len(scored) < len(records):
            missing = next(r["id"] for r in records if not r["answers"])
            raise DataError(f"{self.dataset_name}: {len(records) - len(scored)} of "
                            f"{len(records)} samples have no answers (e.g. id {missing!r}); "
                            f"a split is scored only when every sample has answers.")
        predictions, answers = [r["answer"] for r in scored], [r["answers"] for r in scored]
        if self.settings["metric"] == "aokvqa":
            out = aokvqa_official(predictions, answers, [r.get("difficult") for r in scored])
        else:
            out = {"acc": mean_accuracy(self.settings["metric"], predictions, answers)}
        return {**out, "num_samples": len(records)}

    def write_submission(self, records: list[dict[str, Any]], dataset: Any,
                         out_dir: str) -> str | None:
        """A split without answers (VizWiz test-dev, A-OKVQA test): the evaluation
        server's file (`tasks/submissions.py`) beside the predictions."""
        if any(r["answers"] for r in records):
            return None
        return write_submission(self, records, dataset, out_dir, field="direct_answer")


@registry.register_task("vqa")
class VQATask(AnswerTask):
    """Open-ended VQA (VQAv2 accuracy by default)."""

    NAME = "vqa"
    DEFAULTS_FROM = "coco_vqa"


@registry.register_task("gqa")
class GQATask(AnswerTask):
    """GQA: exact match of the normalised answer."""

    NAME = "gqa"
    DEFAULT_METRIC = "exact"
    DEFAULTS_FROM = "gqa"

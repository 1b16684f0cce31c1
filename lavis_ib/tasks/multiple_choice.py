"""`multiple_choice`: rank each question's option texts by their log-likelihood.

Ranking the given options, rather than generating and matching, is how the zero-shot
protocol scores ScienceQA, IconQA and A-OKVQA's multiple-choice setting
(datasets, keys, prompt fields and settings: `MultipleChoiceTask`)."""
from __future__ import annotations

import logging
from typing import Any, Mapping

from lavis_ib.common.errors import ConfigError, DataError, did_you_mean
from lavis_ib.common.registry import registry
from lavis_ib.tasks.eval_task import EvalTask
from lavis_ib.tasks.metrics.rank import best_first
from lavis_ib.tasks.submissions import server_split_metrics, write_submission

logger = logging.getLogger(__name__)


@registry.register_task("multiple_choice")
class MultipleChoiceTask(EvalTask):
    """Candidate ranking over the options of each question.

    Datasets: ScienceQA (image subset), IconQA (multi-text-choice), A-OKVQA (multiple
    choice). Sample keys: ``image``, ``question_id``, ``question``, ``choices``
    (list[str]), ``correct_choice_idx`` (int); ScienceQA adds ``context`` (may be "").
    Prompt placeholders (``PROMPT_FIELDS``, in order): ``context``, ``raw_question`` (the
    sample's ``question`` as the dataset writes it), ``options`` (the choices with letter
    labels, ``(a) x (b) y``). A prompt with n ``{}`` takes the last n: two take the
    question and the options, one the options alone (``prompt_fields`` chooses others).

    Settings: ``prompt``, ``append_eos``, ``candidates`` (only ``choices``), ``metric``
    (``accuracy``; ``aokvqa`` adds ``acc_official``, the A-OKVQA authors' scorer).
    Metrics: ``{"acc"}`` in percent.

    Records: ``{"id", "pred_idx", "answer", "correct_choice_idx", "num_choices"}``.
    """

    NAME = "multiple_choice"
    METRIC_NAMES = ("acc", "num_samples")
    INFERENCE = ("rank",)
    PROMPT_FIELDS = ("context", "raw_question", "options")
    EVAL_KEYS = (EvalTask.EVAL_KEYS - {"generate"}) | {"append_eos", "aggregate", "candidates",
                                                 "metric"}
    DEFAULTS_FROM = "iconqa"
    METRICS = ("accuracy", "aokvqa")

    @classmethod
    def _check_settings(cls, name: str, settings: dict[str, Any],
                        given: Mapping[str, Any]) -> None:
        super()._check_settings(name, settings, given)
        metric = settings.setdefault("metric", cls.METRICS[0])
        if metric not in cls.METRICS:
            raise ConfigError(f"datasets.{name}.metric: unknown metric '{metric}' for multiple "
                              f"choice.{did_you_mean(str(metric), cls.METRICS)} Use one of "
                              f"{', '.join(cls.METRICS)}.")

    @classmethod
    def check_candidates(cls, name: str, candidates: Any) -> Any:
        if candidates not in (None, "choices"):
            raise ConfigError(f"datasets.{name}.candidates: multiple choice ranks the "
                              f"sample's 'choices' only; got {candidates!r}.")
        return "choices"

    def metric_names(self) -> frozenset[str]:
        official = {"acc_official"} if self.settings.get("metric") == "aokvqa" else set()
        return frozenset(self.METRIC_NAMES) | official

    def valid_step(self, model: Any, samples: Mapping[str, Any]) -> list[dict[str, Any]]:
        self.require(samples, "choices")
        ids = self.sample_ids(samples)
        choices = [[str(c) for c in cs] for cs in samples["choices"]]
        for i, cs in zip(ids, choices):
            if not cs:
                raise DataError(f"{self.dataset_name}: sample {i!r} has no choices.")
        # a split whose answers a server holds (A-OKVQA test) has no correct choice
        truth = samples.get("correct_choice_idx")
        truth = [None] * len(ids) if truth is None else truth
        scores, _ = self.run_rank(model, samples, choices)
        order = best_first(scores)
        records = []
        for i, cs, o, gt in zip(ids, choices, order, truth):
            pred = int(o[0])
            gt = None if gt is None else int(gt)
            records.append({"id": i, "pred_idx": pred, "answer": cs[pred],
                            "correct_choice_idx": gt,
                            "correct_answer": None if gt is None else cs[gt],
                            "num_choices": len(cs)})
        return records

    def compute_metrics(self, records: list[dict[str, Any]]) -> dict[str, float]:
        scored = [r for r in records if r["correct_choice_idx"] is not None]
        if not scored:
            logger.warning("%s: no correct choices in this split; predictions written for "
                           "an evaluation server, no accuracy", self.dataset_name)
            return server_split_metrics(len(records))
        if len(scored) < len(records):
            missing = next(r["id"] for r in records if r["correct_choice_idx"] is None)
            raise DataError(f"{self.dataset_name}: {len(records) - len(scored)} of "
                            f"{len(records)} samples have no correct choice (e.g. id "
                            f"{missing!r}); a split is scored only when every sample has one.")
        correct = sum(1 for r in records if r["pred_idx"] == r["correct_choice_idx"])
        out = {"acc": 100.0 * correct / len(records)}
        if self.settings["metric"] == "aokvqa":
            # the A-OKVQA authors' scorer compares the chosen text with the correct choice's
            # text (two options with the same text are then both right), every question
            same = sum(1 for r in records if r["answer"] == r["correct_answer"])
            out["acc_official"] = 100.0 * same / len(records)
        return {**out, "num_samples": len(records)}

    def write_submission(self, records: list[dict[str, Any]], dataset: Any,
                         out_dir: str) -> str | None:
        """A split without correct choices (A-OKVQA test): the leaderboard's file
        (`tasks/submissions.py`) beside the predictions."""
        if any(r["correct_choice_idx"] is not None for r in records):
            return None
        return write_submission(self, records, dataset, out_dir, field="multiple_choice")

"""`multiple_choice`: rank each question's option texts by their log-likelihood.

Datasets: ScienceQA (image subset), IconQA (multi-text-choice), A-OKVQA (multiple choice).
Sample keys: ``image``, ``question_id``, ``question``, ``choices`` (list[str]),
``correct_choice_idx`` (int); ScienceQA adds ``context`` (may be "").
Prompt placeholders (documented order): context, question, options; the options are
written with letter labels, ``(a) x (b) y``. A prompt with two ``{}`` takes question and
options, with one the question.

Settings: ``prompt``, ``append_eos``, ``candidates`` (only ``choices``).
Metrics: ``{"acc"}`` in percent.
"""
from __future__ import annotations

from typing import Any, Mapping

from lavis_ib.common.errors import ConfigError, DataError
from lavis_ib.common.registry import registry
from lavis_ib.tasks.eval_task import EvalTask
from lavis_ib.tasks.rank_metrics import best_first


@registry.register_task("multiple_choice")
class MultipleChoiceTask(EvalTask):
    """Candidate ranking over the options of each question.

    Records: ``{"id", "pred_idx", "answer", "correct_choice_idx", "num_choices"}``.
    """

    NAME = "multiple_choice"
    METRIC_NAMES = ("acc", "num_samples")
    INFERENCE = ("rank",)
    PROMPT_FIELDS = ("context", "raw_question", "options")
    EVAL_KEYS = (EvalTask.EVAL_KEYS - {"generate"}) | {"append_eos", "candidates"}
    DEFAULTS_FROM = "iconqa"

    @classmethod
    def check_candidates(cls, name: str, candidates: Any) -> Any:
        if candidates not in (None, "choices"):
            raise ConfigError(f"datasets.{name}.candidates: multiple choice ranks the "
                              f"sample's 'choices' only; got {candidates!r}.")
        return "choices"

    def valid_step(self, model: Any, samples: Mapping[str, Any]) -> list[dict[str, Any]]:
        self.require(samples, "choices", "correct_choice_idx")
        ids = self.sample_ids(samples)
        choices = [[str(c) for c in cs] for cs in samples["choices"]]
        for i, cs in zip(ids, choices):
            if not cs:
                raise DataError(f"{self.dataset_name}: sample {i!r} has no choices.")
        scores, _ = self.run_rank(model, samples, choices)
        order = best_first(scores)
        records = []
        for i, cs, o, gt in zip(ids, choices, order, samples["correct_choice_idx"]):
            pred = int(o[0])
            records.append({"id": i, "pred_idx": pred, "answer": cs[pred],
                            "correct_choice_idx": int(gt), "num_choices": len(cs)})
        return records

    def compute_metrics(self, records: list[dict[str, Any]]) -> dict[str, float]:
        correct = sum(1 for r in records if r["pred_idx"] == r["correct_choice_idx"])
        return {"acc": 100.0 * correct / len(records), "num_samples": len(records)}

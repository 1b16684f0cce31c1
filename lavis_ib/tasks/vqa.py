"""`vqa` and `gqa`: open-ended question answering, by generation or by ranking a vocabulary.

Datasets: VQAv2, OKVQA, A-OKVQA (direct answer), OCR-VQA, TextVQA, VizWiz (`vqa`); GQA
(`gqa`). Sample keys: ``image``, ``question_id``, ``question``, ``text_input`` (the
normalised question), ``answers`` (all human answers); TextVQA/OCR-VQA add ``ocr_tokens``.
Prompt placeholders (documented order): OCR tokens, then question (a prompt with one
``{}`` takes the question).

Settings: ``inference`` (``generate`` default; ``rank`` with ``candidates: answer_list``
ranks the dataset's answer vocabulary), ``prompt``, ``generate``, ``append_eos`` (rank),
``metric``: ``vqa`` (official VQAv2 accuracy, default), ``aokvqa``, ``exact``, ``ivqa``
(see `lavis_ib.tasks.vqa_metrics`). Metrics: ``{"acc"}`` in percent.
"""
from __future__ import annotations

from typing import Any, Mapping

from lavis_ib.common.errors import ConfigError, did_you_mean
from lavis_ib.common.registry import registry
from lavis_ib.tasks.eval_task import EvalTask
from lavis_ib.tasks.rank_metrics import best_first
from lavis_ib.tasks.vqa_metrics import ACCURACIES, mean_accuracy


class AnswerTask(EvalTask):
    """Shared by `vqa`, `gqa` and `video_qa`: answers scored against ``answers``.

    Records: ``{"id", "question", "answer", "answers"}``.
    """

    INFERENCE = ("generate", "rank")
    PROMPT_FIELDS = ("ocr_tokens", "question")
    EVAL_KEYS = EvalTask.EVAL_KEYS | {"append_eos", "candidates", "metric"}
    DEFAULT_METRIC = "vqa"

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
            raise ConfigError(f"{self.dataset_name}: ranking over answer_list needs the "
                              f"dataset's vocabulary: the evaluation loop must call "
                              f"task.before_evaluation(model, dataset) first.")
        return self.answer_list

    def answers_for(self, model: Any, samples: Mapping[str, Any]) -> list[str]:
        if self.inference == "generate":
            return self.run_generate(model, samples)
        candidates = self.rank_candidates()
        scores, _ = self.run_rank(model, samples, candidates)
        return [candidates[int(order[0])] for order in best_first(scores)]

    def valid_step(self, model: Any, samples: Mapping[str, Any]) -> list[dict[str, Any]]:
        self.require(samples, "answers")
        ids = self.sample_ids(samples)
        answers = self.answers_for(model, samples)
        questions = samples.get("question", samples.get("text_input", [""] * len(ids)))
        return [{"id": i, "question": str(q), "answer": a, "answers": [str(x) for x in gts]}
                for i, q, a, gts in zip(ids, questions, answers, samples["answers"])]

    def compute_metrics(self, records: list[dict[str, Any]]) -> dict[str, float]:
        acc = mean_accuracy(self.settings["metric"], [r["answer"] for r in records],
                            [r["answers"] for r in records])
        return {"acc": acc, "num_samples": len(records)}


@registry.register_task("vqa")
class VQATask(AnswerTask):
    """Open-ended VQA (VQAv2 accuracy by default)."""

    NAME = "vqa"


@registry.register_task("gqa")
class GQATask(AnswerTask):
    """GQA: exact match of the normalised answer."""

    NAME = "gqa"
    DEFAULT_METRIC = "exact"

"""`dialog`: Visual Dialog, rank each round's 100 candidate answers.

Visual Dialog is scored by the rank of the ground truth among fixed candidates (MRR), so
the task ranks rather than generates (keys, settings and metrics: `DialogTask`)."""
from __future__ import annotations

from typing import Any, Mapping

from lavis_ib.common.errors import ConfigError, DataError
from lavis_ib.common.registry import registry
from lavis_ib.tasks.eval_task import EvalTask
from lavis_ib.tasks.metrics.rank import best_first, ranks_of_targets, retrieval_metrics


@registry.register_task("dialog")
class DialogTask(EvalTask):
    """Candidate ranking per dialog round.

    Sample keys: ``image``, ``instance_id`` ("<image_id>_<round>"), ``question``,
    ``history`` (the caption and earlier rounds, as the dataset writes it), ``candidates``
    (the round's answer strings), ``label`` (index of the ground-truth answer in
    ``candidates``). Prompt placeholders (documented order): history, question.

    Settings: ``prompt``, ``append_eos``, ``candidates`` (only ``candidates``: the
    sample's). Metrics: ``mrr``, ``r1``, ``r5``, ``r10`` in percent and ``mean_rank`` of
    the ground-truth answer (1-based; ties broken by candidate order).

    Records: ``{"id", "rank", "answer", "label"}`` (rank of the ground truth, 1-based;
    answer = the top-ranked candidate).
    """

    NAME = "dialog"
    METRIC_NAMES = ("mrr", "r1", "r5", "r10", "mean_rank", "num_samples")
    INFERENCE = ("rank",)
    PROMPT_FIELDS = ("history", "raw_question")
    EVAL_KEYS = (EvalTask.EVAL_KEYS - {"generate"}) | {"append_eos", "aggregate", "candidates"}
    DEFAULTS_FROM = "visdial"

    @classmethod
    def check_candidates(cls, name: str, candidates: Any) -> Any:
        if candidates not in (None, "candidates"):
            raise ConfigError(f"datasets.{name}.candidates: dialog ranks the sample's own "
                              f"'candidates' only; got {candidates!r}.")
        return "candidates"

    def valid_step(self, model: Any, samples: Mapping[str, Any]) -> list[dict[str, Any]]:
        self.require(samples, "candidates", "label")
        ids = self.sample_ids(samples)
        candidates = [[str(c) for c in cs] for cs in samples["candidates"]]
        labels = [int(x) for x in samples["label"]]
        for i, cs, lab in zip(ids, candidates, labels):
            if not 0 <= lab < len(cs):
                raise DataError(f"{self.dataset_name}: sample {i!r} has label {lab} but "
                                f"{len(cs)} candidates.")
        scores, _ = self.run_rank(model, samples, candidates)
        ranks = ranks_of_targets(scores, labels)
        top = best_first(scores)[:, 0].tolist()
        return [{"id": i, "rank": r, "answer": cs[t], "label": lab}
                for i, r, cs, t, lab in zip(ids, ranks, candidates, top, labels)]

    def compute_metrics(self, records: list[dict[str, Any]]) -> dict[str, float]:
        out = retrieval_metrics([int(r["rank"]) for r in records])
        out["num_samples"] = len(records)
        return out

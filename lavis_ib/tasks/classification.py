"""`classification`: binary decisions by ranking two word sets (HatefulMemes, VSR).

A yes/no answer is scored as the likelihood of two word sets against each other rather than
generated, so the probability needed for HatefulMemes' ROC AUC comes with it
(`ClassificationTask`)."""
from __future__ import annotations

import logging
from typing import Any, Mapping

from lavis_ib.common.errors import ConfigError
from lavis_ib.common.registry import registry
from lavis_ib.tasks.eval_task import EvalTask
from lavis_ib.tasks.metrics.rank import binary_probability, roc_auc

logger = logging.getLogger(__name__)
DEFAULT_WORDS = {"positive": ["yes", "true"], "negative": ["no", "false"]}


@registry.register_task("classification")
class ClassificationTask(EvalTask):
    """Word-set ranking for binary labels.

    Each sample's candidates are the words of both sets (default {yes, true} vs {no,
    false}; HatefulMemes {yes} vs {no}). log p(set) is the log-sum-exp of its words'
    log-likelihoods, and p(positive) = sigmoid(log p(pos) - log p(neg)): the two sets
    normalised against each other. The prediction is positive when p(positive) > 0.5.
    Sample keys: ``image``, ``instance_id``, ``text_input`` (meme text / VSR statement),
    ``label`` (1 = hateful / true). Prompt placeholder: the text.

    Settings: ``prompt``, ``append_eos``, ``candidates: {positive: [...], negative: [...]}``.
    Metrics (percent): ``acc``; ``auc`` (ROC AUC of p(positive)) when both labels occur.

    Records: ``{"id", "prob", "pred", "label"}`` (prob = p(positive)).
    """

    NAME = "classification"
    METRIC_NAMES = ("acc", "auc", "num_samples")
    INFERENCE = ("rank",)
    PROMPT_FIELDS = ("text",)
    EVAL_KEYS = (EvalTask.EVAL_KEYS - {"generate"}) | {"append_eos", "aggregate", "candidates"}
    DEFAULTS_FROM = "vsr"

    @classmethod
    def check_candidates(cls, name: str, candidates: Any) -> Any:
        if candidates is None:
            return {k: list(v) for k, v in DEFAULT_WORDS.items()}
        ok = (isinstance(candidates, Mapping) and set(candidates) == {"positive", "negative"}
              and all(isinstance(v, list) and v and all(isinstance(w, str) for w in v)
                      for v in candidates.values()))
        if not ok:
            raise ConfigError(f"datasets.{name}.candidates must be {{positive: [words], "
                              f"negative: [words]}}, e.g. {DEFAULT_WORDS}; got {candidates!r}.")
        overlap = set(candidates["positive"]) & set(candidates["negative"])
        if overlap:
            raise ConfigError(f"datasets.{name}.candidates: {sorted(overlap)} in both sets.")
        return {k: list(v) for k, v in candidates.items()}

    def valid_step(self, model: Any, samples: Mapping[str, Any]) -> list[dict[str, Any]]:
        self.require(samples, "label")
        ids = self.sample_ids(samples)
        pos, neg = self.candidates["positive"], self.candidates["negative"]
        scores, _ = self.run_rank(model, samples, pos + neg)
        records = []
        for i, row, label in zip(ids, scores.tolist(), samples["label"]):
            prob = binary_probability(row[:len(pos)], row[len(pos):])
            records.append({"id": i, "prob": prob, "pred": int(prob > 0.5),
                            "label": int(label)})
        return records

    def compute_metrics(self, records: list[dict[str, Any]]) -> dict[str, float]:
        labels = [r["label"] for r in records]
        out = {"acc": 100.0 * sum(r["pred"] == r["label"] for r in records) / len(records)}
        if len(set(labels)) == 2:
            out["auc"] = roc_auc(labels, [r["prob"] for r in records])
        else:
            logger.warning("%s: AUC left out: only label %s among %d samples",
                           self.dataset_name, labels[0], len(labels))
        out["num_samples"] = len(records)
        return out

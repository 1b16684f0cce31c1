"""`exact_match`: an evaluation task added by decorator (docs/adding_a_task.md).

It generates one short answer per sample and counts a hit when the answer equals any
human answer after normalisation (lower case, no punctuation, no articles). It reads the
sample keys ``image``, ``question_id`` or ``instance_id``, ``text_input`` (the question
the prompt's ``{}`` takes) and ``answers``; any dataset producing them can use it.

Settings (``datasets.<name>`` in a project): ``prompt`` (required, one ``{}``),
``generate`` (model.generate arguments), ``eval_subset``, ``eval_splits``.
Metrics: ``match`` (percent of samples hit) and ``mean_words`` (answer length).
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from lavis_ib import registry
from lavis_ib.common.errors import ConfigError
from lavis_ib.tasks.eval_task import EvalTask

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = re.compile(r"[^\w\s]")


def normalize_answer(text: str) -> str:
    """'The Red cup.' -> 'red cup'."""
    text = _PUNCT.sub(" ", str(text).lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


@registry.register_task("exact_match")
class ExactMatchTask(EvalTask):
    """Generation scored by normalised exact match against any human answer."""

    NAME = "exact_match"
    INFERENCE = ("generate",)          # `inference: rank` is rejected with a clear error
    PROMPT_FIELDS = ("question",)      # what a prompt's `{}` is filled with
    EVAL_KEYS = EvalTask.EVAL_KEYS     # inference, prompt, prompt_fields, generate, eval_*

    @classmethod
    def _check_settings(cls, name: str, settings: dict[str, Any],
                        given: Mapping[str, Any]) -> None:
        super()._check_settings(name, settings, given)
        if "{}" not in settings.get("prompt", ""):
            raise ConfigError(f"datasets.{name}.prompt: the exact_match task needs a prompt "
                              f"with one '{{}}' for the question, e.g. "
                              f"'Question: {{}} Short answer:'.")

    def valid_step(self, model: Any, samples: Mapping[str, Any]) -> list[dict[str, Any]]:
        self.require(samples, "answers")       # DataError naming the missing key
        ids = self.sample_ids(samples)         # question_id or instance_id
        predictions = self.run_generate(model, samples)
        return [{"id": i, "prediction": p, "answers": [str(a) for a in gts]}
                for i, p, gts in zip(ids, predictions, samples["answers"])]

    def compute_metrics(self, records: list[dict[str, Any]]) -> dict[str, float]:
        hits = [normalize_answer(r["prediction"]) in {normalize_answer(a) for a in r["answers"]}
                for r in records]
        words = [len(r["prediction"].split()) for r in records]
        return {"match": 100.0 * sum(hits) / len(records),
                "mean_words": sum(words) / len(records)}

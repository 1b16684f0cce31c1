"""`EvalTask`: what the evaluation tasks share.

A new benchmark declares what it reads and how it scores, and inherits the settings
parsing, the prompts and the calls into the model contract (docs/adding_a_task.md)."""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Sequence

import torch

from lavis_ib.common.errors import ConfigError, DataError, LavisIbError
from lavis_ib.common.prompts import (count_placeholders, fill_placeholders, format_ocr_tokens,
                                     format_options)
from lavis_ib.tasks.base_task import BaseTask
from lavis_ib.tasks.eval_settings import (PROMPT_FIELD_KEYS, RUNNER_KEYS, EvalSettings,
                                          check_generate, check_settings, parse_settings)


def _field(key: str) -> Callable[[Mapping[str, Any], int], str]:
    return lambda s, i: str(s[key][i])


def _question(s: Mapping[str, Any], i: int) -> str:
    # The normalised question (text_input) where the dataset gives one, as LAVIS fills it.
    key = "text_input" if "text_input" in s else "question"
    return str(s[key][i])


# How each prompt field (eval_settings.PROMPT_FIELD_KEYS) reads a sample of the batch.
FIELD_GETTERS: dict[str, Callable[[Mapping[str, Any], int], str]] = {
    "question": _question,
    "raw_question": _field("question"),
    "text_input": _field("text_input"),
    "ocr_tokens": lambda s, i: format_ocr_tokens(s["ocr_tokens"][i]),
    "context": lambda s, i: str(s["context"][i] or ""),
    "options": lambda s, i: format_options(list(s["choices"][i])),
    "history": _field("history"),
    "text": _field("text_input"),
}


class EvalTask(BaseTask):
    """Base of the evaluation tasks.

    A task declares what it reads (the class attributes below) and `for_dataset` hands the
    dataset's composed entry to `tasks/eval_settings.py`, which parses and checks it into
    one `EvalSettings`. A task then builds one prompt per sample and calls the model's
    `generate` or `score_candidates` (the model contract, docs/architecture.md) with the
    settings resolved for the model's `llm_family`.

    Class attributes of a subclass:
        NAME: the registered task name.
        INFERENCE: the inference modes it supports (first = default).
        PROMPT_FIELDS: the documented placeholder order; a prompt with n ``{}`` takes the
            last n fields (``Question: {}`` -> question; ``OCR tokens: {}. Question: {}``
            -> OCR tokens, question).
        EVAL_KEYS: the settings it reads (the runner's `eval_subset`/`eval_splits` included).
        DEFAULTS_FROM: a shipped dataset whose defaults (metric excepted) are the task's
            generic settings, beneath the entry's, for a dataset that gives none.

    Attributes:
        eval_settings: the checked `EvalSettings` of the dataset.
    """

    NAME = ""
    INFERENCE: tuple[str, ...] = ("generate",)
    PROMPT_FIELDS: tuple[str, ...] = ()
    EVAL_KEYS = frozenset({"inference", "prompt", "prompt_fields", "generate"}) | RUNNER_KEYS
    DEFAULTS_FROM: str | None = None
    #: the metric names `metrics` returns (None: not declared, run.select_metric unchecked)
    METRIC_NAMES: tuple[str, ...] | None = None

    def __init__(self, cfg: Any = None, dataset_name: str | None = None,
                 settings: EvalSettings | Mapping[str, Any] | None = None) -> None:
        super().__init__(cfg, dataset_name)
        if not isinstance(settings, EvalSettings):
            settings = EvalSettings.from_mapping(dataset_name or "", settings or {})
        self.eval_settings = settings
        self.answer_list: list[str] | None = None
        self._generate_checked: set[type] = set()

    # -- the settings, as valid_step reads them ---------------------------------------
    settings = property(lambda self: self.eval_settings.as_dict(), doc="set keys, as a dict")
    inference = property(lambda self: self.eval_settings.inference)
    prompt = property(lambda self: self.eval_settings.prompt)
    prompt_fields = property(lambda self: self.eval_settings.prompt_fields)
    generate_kwargs = property(lambda self: dict(self.eval_settings.generate or {}))
    append_eos = property(lambda self: self.eval_settings.append_eos)
    candidates = property(lambda self: self.eval_settings.candidates)

    def metric_names(self) -> frozenset[str] | None:
        """The metric names this dataset's evaluation will produce, known before any
        model or data is loaded (the pre-flight check of run.select_metric reads them)."""
        return None if self.METRIC_NAMES is None else frozenset(self.METRIC_NAMES)

    # -- construction -----------------------------------------------------------------
    @classmethod
    def for_dataset(cls, name: str, dataset_cfg: Any = None,
                    model_cls: type | None = None) -> "EvalTask":
        """The task evaluating dataset `name` with its (composed) entry's settings, parsed
        and checked by `eval_settings.parse_settings`.

        Args:
            model_cls: the evaluated model's class: `generate` keys are checked against
                its signature now (else at the first batch).

        Raises:
            ConfigError: a setting this task does not read, a misspelt key, a wrong value.
        """
        return cls(dataset_cfg, dataset_name=name,
                   settings=parse_settings(cls, name, dataset_cfg, model_cls))

    @classmethod
    def _check_settings(cls, name: str, settings: dict[str, Any],
                        given: Mapping[str, Any]) -> None:
        """Check and complete `settings` in place (`given`: the whole entry); a task with
        settings of its own extends this and calls it first."""
        check_settings(cls, name, settings, given)

    @classmethod
    def check_candidates(cls, name: str, candidates: Any) -> Any:
        """Validate the `candidates` setting of a ranking task (subclasses override)."""
        return candidates

    # -- evaluation hooks ---------------------------------------------------------------
    def before_evaluation(self, model: Any, dataset: Any) -> None:
        """Called by the evaluation loop once per dataset split before the first batch:
        takes the answer vocabulary when candidates come from ``answer_list``."""
        if self.inference == "rank" and self.candidates == "answer_list":
            answer_list = getattr(dataset, "answer_list", None)
            if not answer_list:
                raise DataError(f"{self.dataset_name}: candidates: answer_list needs the "
                                f"dataset's answer_list (the train-set answer vocabulary); "
                                f"{type(dataset).__name__} has none.")
            self.answer_list = [str(a) for a in answer_list]

    # -- helpers for valid_step -----------------------------------------------------------
    @staticmethod
    def sample_ids(samples: Mapping[str, Any]) -> list[Any]:
        for key in ("question_id", "instance_id"):
            if key in samples:
                return [v.item() if isinstance(v, torch.Tensor) else v for v in samples[key]]
        raise DataError("an evaluation batch has neither 'question_id' nor 'instance_id'.")

    def require(self, samples: Mapping[str, Any], *keys: str) -> None:
        missing = [k for k in keys if k not in samples]
        if missing:
            raise DataError(f"{self.dataset_name}: the '{self.NAME}' task needs sample key(s) "
                            f"{', '.join(missing)}; the batch has {', '.join(sorted(samples))}.")

    def prompts(self, samples: Mapping[str, Any]) -> list[str]:
        """One prompt per sample, its ``{}`` filled in the documented field order."""
        n = count_placeholders(self.prompt)
        fields = self.prompt_fields or (self.PROMPT_FIELDS[len(self.PROMPT_FIELDS) - n:]
                                        if n else ())
        self.require(samples, *{PROMPT_FIELD_KEYS[f] for f in fields
                                if not (f == "question" and "text_input" in samples)})
        batch = len(self.sample_ids(samples))
        return [fill_placeholders(self.prompt, [FIELD_GETTERS[f](samples, i) for f in fields])
                for i in range(batch)]

    def model_samples(self, samples: Mapping[str, Any]) -> dict[str, Any]:
        """The batch handed to the model: the samples with their filled `prompt`."""
        out = dict(samples)
        out["prompt"] = self.prompts(samples)
        return out

    def run_generate(self, model: Any, samples: Mapping[str, Any]) -> list[str]:
        if type(model) not in self._generate_checked:   # once per model class
            check_generate(self.dataset_name, self.eval_settings.generate,
                           type(model).generation_settings())
            self._generate_checked.add(type(model))
        kwargs = self.eval_settings.generate_kwargs(model.llm_family)
        with torch.no_grad():
            outputs = model.generate(self.model_samples(samples), **kwargs)
        return [str(o).strip() for o in outputs]

    def run_rank(self, model: Any, samples: Mapping[str, Any],
                 candidates: Sequence[str] | Sequence[Sequence[str]]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, mask), each (B, Cmax): summed log-probabilities (or the dataset's
        `aggregate` of them), -inf where padded."""
        append_eos = self.eval_settings.append_eos_for(model.llm_family,
                                                       model.default_append_eos)
        aggregate = self.eval_settings.aggregate_for(model.llm_family)
        extra = {} if aggregate == "sum" else {"aggregate": aggregate}
        if extra and "aggregate" not in inspect.signature(model.score_candidates).parameters:
            raise ConfigError(f"datasets.{self.dataset_name}.aggregate: {type(model).__name__}"
                              f".score_candidates takes no aggregate; remove the setting.")
        with torch.no_grad():
            scores, mask = model.score_candidates(self.model_samples(samples), candidates,
                                                  append_eos=append_eos, **extra)
        scores = scores.detach().float().cpu()
        mask = mask.detach().bool().cpu()
        if bool(torch.isnan(scores[mask]).any()):   # a ranking of NaNs would pick index 0
            raise LavisIbError(
                f"{self.dataset_name}: the model scored {int(torch.isnan(scores[mask]).sum())} "
                f"candidates as NaN; its outputs are not finite (NaN weights, or an overflow "
                f"in fp16), so no metric is reported. Check the weights or evaluate with "
                f"run.amp=none.")
        return scores.masked_fill(~mask, float("-inf")), mask

    def metrics(self, records: list[dict[str, Any]], dataset: Any) -> dict[str, float]:
        if not records:
            raise DataError(f"{self.dataset_name}: no predictions to score (empty eval split?).")
        return self.compute_metrics(records)

    def compute_metrics(self, records: list[dict[str, Any]]) -> dict[str, float]:
        """Metrics of a non-empty list of de-duplicated records (each task defines them)."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute_metrics")

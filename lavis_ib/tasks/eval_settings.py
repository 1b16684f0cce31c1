"""A dataset's evaluation settings from its YAML entry to the task, in one module: the
keys, the one rule for switching task or inference, the parsing and checks, `EvalSettings`.

One home, so the config layer, the pre-flight and every task read an entry alike; the
config layer gets the switching rule through the registry (`replaced_defaults`)."""
from __future__ import annotations

import dataclasses
import difflib
import functools
from typing import Any, Mapping

from lavis_ib.common.config import compose_dataset
from lavis_ib.common.containers import to_plain
from lavis_ib.common.errors import ConfigError, did_you_mean
from lavis_ib.common.prompts import count_placeholders
from lavis_ib.common.registry import registry

# Per-dataset settings read by evaluation tasks (all optional):
#   inference      generate | rank.
#   prompt         the instruction; each {} is filled from the sample (task field order).
#   prompt_fields  the sample fields filling the {}, in order (default: the last n of the
#                  task's documented PROMPT_FIELDS, n = number of {}).
#   generate       keyword arguments of the model's generate (its own signature says
#                  which: BaseModel.generation_settings).
#   append_eos     rank: score each candidate with EOS appended (absent: the model's
#                  default_append_eos).
#   aggregate      rank: sum (default: summed log-probabilities) | lavis_segment_mean
#                  (LAVIS's Vicuna score, the sum over the padded length; decoder-only).
#   candidates     rank: where candidates come from (task-specific, see each task).
#   metric         which metric set (task-specific).
# A per-family value is a mapping keyed by model.llm_family (e.g. length_penalty:
# {<family>: 0, <other family>: -1}); a model whose family it lacks is a ConfigError
# naming dataset, key and family.
TASK_SETTING_KEYS = ("inference", "prompt", "prompt_fields", "generate", "append_eos",
                     "aggregate", "candidates", "metric")
# Settings that belong to one inference mode: dropped when an entry switches mode.
INFERENCE_SETTING_KEYS = ("generate", "candidates", "append_eos", "aggregate")
# The values of `aggregate` (models.components.inference.AGGREGATES; this layer cannot
# import models, a test holds the two equal).
AGGREGATES = ("sum", "lavis_segment_mean")
# Mapping-valued settings an entry replaces as a whole (never merged key by key).
WHOLE_SETTING_KEYS = ("generate", "candidates")
# Read by the evaluation loop, accepted here:
#   eval_subset     evaluate a fixed subset of this many samples.
#   eval_splits     the splits to evaluate ([]: none).
#   length_grouped  batch samples of similar prompt length together (default true; the
#                   records are the same, the padding less); false keeps dataset order.
RUNNER_KEYS = frozenset({"eval_subset", "eval_splits", "length_grouped"})
# Every per-dataset evaluation key; a task that reads a subset rejects the others.
ALL_EVAL_KEYS = frozenset(TASK_SETTING_KEYS) | RUNNER_KEYS
# Keys of builder defaults that look like evaluation keys but are not (never flagged).
_BUILDER_KEYS = frozenset({"task", "type", "data_type", "build_info", "vis_processor",
                           "text_processor", "sample_ratio", "cache_root", "template_family",
                           "templates", "num_frames", "answer_list", "download",
                           "max_history_chars", "num_samples", "builder"})
INFERENCE_MODES = ("generate", "rank")
# The sample fields a prompt placeholder can name (`prompt_fields`), each with the batch
# key it reads (tasks/eval_task.py fills them).
PROMPT_FIELD_KEYS = {"question": "question", "raw_question": "question",
                     "text_input": "text_input", "ocr_tokens": "ocr_tokens",
                     "context": "context", "options": "choices", "history": "history",
                     "text": "text_input"}


# -- the rule for switching task or inference ---------------------------------------------
# `common/config.py` composes entries without knowing these keys: the registry hands it this
# rule (`registry.entry_rules` imports this module on first use, as it does builders). Not a
# callback each `Config` caller passes (one forgetting it would compose differently), nor
# composition moved above `common` (it would split `Config` across layers).
@registry.register_entry_rule("evaluation_settings")
def replaced_defaults(defaults: Mapping[str, Any], entry: Mapping[str, Any],
                      option: Mapping[str, Any] | None = None) -> frozenset[str]:
    """The keys of `defaults` that dataset `entry` (with its --options `option`) replaces
    instead of merging over. Defaults hold one protocol: an entry naming another `task`
    drops all their task settings, one switching `inference` their `generate`,
    `candidates` and `append_eos`; the `generate` or `candidates` an entry gives replaces
    theirs whole (an --options value merges key by key). Applied to a builder's defaults
    (common/config.py) and to a task's generic settings (`parse_settings`) alike."""
    whole = frozenset(k for k in WHOLE_SETTING_KEYS if k in entry)
    for key, protocol in (("task", TASK_SETTING_KEYS), ("inference", INFERENCE_SETTING_KEYS)):
        source = option if option is not None and key in option else entry
        if key in source and source[key] != defaults.get(key):
            return frozenset(protocol) | whole
    return whole


@functools.lru_cache(maxsize=None)
def _generic_settings(dataset: str) -> tuple[tuple[str, Any], ...]:
    """The task settings of shipped dataset `dataset`'s defaults, its metric excepted."""
    entry = to_plain(compose_dataset(dataset))
    return tuple((k, entry[k]) for k in TASK_SETTING_KEYS if k in entry and k != "metric")


# -- parsing ------------------------------------------------------------------------------
def parse_settings(task_cls: Any, name: str, dataset_cfg: Any = None,
                   model_cls: type | None = None) -> "EvalSettings":
    """The checked settings of dataset `name` as evaluation task `task_cls` reads them.

    The entry's evaluation keys go over the task's generic settings (those of its
    `DEFAULTS_FROM` dataset, by `replaced_defaults`); keys the task does not read are
    refused, then `task_cls._check_settings` runs (`check_settings` plus the task's own).

    Args:
        task_cls: an `EvalTask` subclass (NAME, INFERENCE, PROMPT_FIELDS, EVAL_KEYS,
            DEFAULTS_FROM, `_check_settings`, `check_candidates`).
        model_cls: the evaluated model's class: `generate` keys are checked against its
            signature now (else at the first batch).

    Raises:
        ConfigError: a setting this task does not read, a misspelt key, a wrong value.
    """
    given = to_plain(dataset_cfg) or {}
    if not isinstance(given, Mapping):
        raise ConfigError(f"datasets.{name} must be a mapping; got {given!r}.")
    check_misspelt_keys(name, given)
    check_eval_keys(task_cls, name, given)
    own = {k: v for k, v in given.items() if k in ALL_EVAL_KEYS}
    generic = dict(_generic_settings(task_cls.DEFAULTS_FROM)) if task_cls.DEFAULTS_FROM else {}
    dropped = replaced_defaults(generic, own)
    settings = {**{k: v for k, v in generic.items() if k not in dropped}, **own}
    settings = {k: v for k, v in settings.items() if k in task_cls.EVAL_KEYS}
    task_cls._check_settings(name, settings, given)
    if model_cls is not None and settings.get("inference") == "generate":
        check_generate(name, settings.get("generate"), model_cls.generation_settings())
    return EvalSettings.from_mapping(name, settings)


# -- checks -------------------------------------------------------------------------------
def check_misspelt_keys(name: str, cfg: Mapping[str, Any]) -> None:
    """Raise for a key that is not an evaluation key but looks like a misspelt one."""
    for key in cfg:
        key = str(key)
        if key in ALL_EVAL_KEYS or key in _BUILDER_KEYS:
            continue
        # a strict cutoff: builders may add keys of their own that merely resemble ours
        matches = difflib.get_close_matches(key, sorted(ALL_EVAL_KEYS), n=1, cutoff=0.75)
        if matches:
            raise ConfigError(f"datasets.{name}.{key}: not an evaluation setting. "
                              f"Did you mean '{matches[0]}'? Evaluation settings: "
                              f"{', '.join(sorted(ALL_EVAL_KEYS))}.")


def check_eval_keys(task_cls: Any, name: str, given: Mapping[str, Any]) -> None:
    """Raise for an evaluation setting `task_cls` would ignore."""
    for key in given:
        if key in ALL_EVAL_KEYS and key not in task_cls.EVAL_KEYS:
            raise ConfigError(
                f"datasets.{name}.{key}: the '{task_cls.__name__}' task does not read "
                f"'{key}'; it reads {sorted(task_cls.EVAL_KEYS) or 'no evaluation settings'}."
                f"{did_you_mean(key, task_cls.EVAL_KEYS)}")


def check_settings(task_cls: Any, name: str, settings: dict[str, Any],
                   given: Mapping[str, Any]) -> None:
    """The checks every evaluation task shares, completing `settings` in place: the
    inference mode, the settings of the other mode given in the entry, `generate`,
    `append_eos`, `aggregate`, `candidates` (by `task_cls.check_candidates`) and the
    prompt."""
    where = f"datasets.{name}"
    inference = settings.setdefault("inference", task_cls.INFERENCE[0])
    if inference not in task_cls.INFERENCE:
        allowed = " or ".join(task_cls.INFERENCE)
        raise ConfigError(f"{where}.inference: '{inference}' is not supported by the "
                          f"'{task_cls.NAME}' task; use {allowed}."
                          + ("" if inference in INFERENCE_MODES
                             else did_you_mean(str(inference), INFERENCE_MODES)))
    if inference == "generate":
        for key in ("append_eos", "aggregate", "candidates"):
            if key in given:
                raise ConfigError(f"{where}.{key} is only read with inference: rank "
                                  f"(this dataset generates); remove it.")
        settings["generate"] = check_generate(name, settings.get("generate"))
    else:
        if "generate" in given:
            raise ConfigError(f"{where}.generate is only read with inference: generate "
                              f"(this dataset ranks candidates); remove it.")
        settings.pop("generate", None)
        _check_append_eos(where, settings)
        _check_aggregate(where, settings)
        settings["candidates"] = task_cls.check_candidates(name, to_plain(settings.get("candidates")))
    check_prompt(where, settings, task_cls.NAME, task_cls.PROMPT_FIELDS)
    grouped = settings.get("length_grouped")
    if grouped is not None and not isinstance(grouped, bool):
        raise ConfigError(f"{where}.length_grouped must be true or false; got {grouped!r}.")


def _check_append_eos(where: str, settings: dict[str, Any]) -> None:
    if settings.get("append_eos") is None:
        settings.pop("append_eos", None)     # the model's default_append_eos
        return
    eos = to_plain(settings["append_eos"])
    check_family_value(f"{where}.append_eos", eos)
    values = eos.values() if isinstance(eos, Mapping) else [eos]
    if not all(isinstance(v, bool) for v in values):
        raise ConfigError(f"{where}.append_eos must be true, false or a mapping from "
                          f"LLM family to true/false; got {eos!r}.")
    settings["append_eos"] = eos


def _check_aggregate(where: str, settings: dict[str, Any]) -> None:
    if settings.get("aggregate") is None:
        settings.pop("aggregate", None)      # sum
        return
    value = to_plain(settings["aggregate"])
    check_family_value(f"{where}.aggregate", value)
    values = value.values() if isinstance(value, Mapping) else [value]
    for v in values:
        if v not in AGGREGATES:
            raise ConfigError(f"{where}.aggregate: {v!r} is not one of {', '.join(AGGREGATES)} "
                              f"(or a mapping from LLM family to one of them)."
                              f"{did_you_mean(str(v), AGGREGATES)}")
    settings["aggregate"] = value


def check_prompt(where: str, settings: Mapping[str, Any], task: str,
                 task_fields: tuple[str, ...]) -> None:
    """The prompt is a string whose ``{}`` the task (`task_fields`, its documented
    order) or `prompt_fields` can fill."""
    prompt = settings.get("prompt", "")
    if not isinstance(prompt, str):
        raise ConfigError(f"{where}.prompt must be a string; got {prompt!r}.")
    n = count_placeholders(prompt)
    fields = tuple(to_plain(settings.get("prompt_fields")) or ())
    if fields:
        for f in fields:
            if f not in PROMPT_FIELD_KEYS:
                raise ConfigError(f"{where}.prompt_fields: unknown field '{f}'."
                                  f"{did_you_mean(f, PROMPT_FIELD_KEYS)} Fields: "
                                  f"{', '.join(PROMPT_FIELD_KEYS)}.")
        if len(fields) != n:
            raise ConfigError(f"{where}: prompt has {n} '{{}}' placeholder(s) but "
                              f"prompt_fields names {len(fields)} field(s).")
    elif n > len(task_fields):
        raise ConfigError(f"{where}.prompt has {n} '{{}}' placeholders; the '{task}' "
                          f"task fills at most {len(task_fields)} "
                          f"({', '.join(task_fields) or 'none'}); set prompt_fields.")


def check_generate(name: str, generate: Any, allowed: frozenset[str] | None = None
                   ) -> dict[str, Any]:
    """The `generate` mapping; with `allowed` (the model's `generation_settings`), every
    key must be one of them."""
    generate = to_plain(generate)
    if generate is None:
        return {}
    if not isinstance(generate, Mapping):
        raise ConfigError(f"datasets.{name}.generate must be a mapping of generate() "
                          f"arguments, e.g. {{num_beams: 5, max_length: 10}}; got {generate!r}.")
    for key, value in generate.items():
        if allowed is not None and key not in allowed:
            raise ConfigError(f"datasets.{name}.generate.{key}: model.generate has no such "
                              f"argument.{did_you_mean(key, allowed)} Arguments: "
                              f"{', '.join(sorted(allowed))}.")
        check_family_value(f"datasets.{name}.generate.{key}", value)
    return dict(generate)


def check_family_value(where: str, value: Any) -> None:
    """A per-family value is a non-empty mapping from family names to values."""
    if isinstance(value, Mapping) and (not value or not all(isinstance(k, str) for k in value)):
        raise ConfigError(f"{where}: a per-family value maps LLM family names to values, "
                          f"e.g. {{<llm_family>: value, ...}}; got {value!r}.")


def family_value(where: str, value: Any, family: str) -> Any:
    """`value`, or its entry for `family` when it is a per-family mapping."""
    if not isinstance(value, Mapping):
        return value
    if family not in value:
        raise ConfigError(f"{where}: no value for LLM family '{family}' (the model's "
                          f"llm_family); the mapping gives {', '.join(map(str, value))}.")
    return value[family]


# -- the result ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """The checked settings of one dataset's evaluation (parsed once, by `parse_settings`).

    `extra` holds settings a task of its own adds in `_check_settings`.
    """

    dataset: str
    inference: str = "generate"
    prompt: str = ""
    prompt_fields: tuple[str, ...] = ()
    generate: Mapping[str, Any] | None = None
    append_eos: Any = None
    aggregate: Any = None
    candidates: Any = None
    metric: str | None = None
    eval_splits: Any = None
    eval_subset: int | None = None
    length_grouped: bool | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    _FIELDS = ("inference", "prompt", "prompt_fields", "generate", "append_eos",
               "aggregate", "candidates", "metric", "eval_splits", "eval_subset",
               "length_grouped")

    @classmethod
    def from_mapping(cls, dataset: str, settings: Mapping[str, Any]) -> "EvalSettings":
        known = {k: to_plain(v) for k, v in settings.items() if k in cls._FIELDS}
        if "prompt_fields" in known:
            known["prompt_fields"] = tuple(known["prompt_fields"] or ())
        extra = {k: v for k, v in settings.items() if k not in cls._FIELDS}
        return cls(dataset=dataset, extra=extra, **known)

    def as_dict(self) -> dict[str, Any]:
        """The settings that are set, as a plain mapping (what `task.settings` shows)."""
        out = {k: getattr(self, k) for k in self._FIELDS}
        out = {k: v for k, v in out.items() if v is not None and v != () and v != ""}
        if self.inference != "generate":
            out.pop("generate", None)
        return {**out, **self.extra}

    def generate_kwargs(self, family: str) -> dict[str, Any]:
        """`generate` with each per-family value resolved for `family`."""
        where = f"datasets.{self.dataset}.generate"
        return {k: family_value(f"{where}.{k}", v, family)
                for k, v in (self.generate or {}).items()}

    def append_eos_for(self, family: str, default: bool) -> bool:
        """`append_eos` for `family`; `default` (the model's) when the dataset sets none."""
        if self.append_eos is None:
            return bool(default)
        return bool(family_value(f"datasets.{self.dataset}.append_eos", self.append_eos,
                                 family))

    def aggregate_for(self, family: str) -> str:
        """`aggregate` for `family`; "sum" when the dataset sets none."""
        if self.aggregate is None:
            return "sum"
        return str(family_value(f"datasets.{self.dataset}.aggregate", self.aggregate, family))

"""Per-dataset evaluation settings: the keys, their checks, and the typed `EvalSettings`.

A dataset entry (``datasets.<name>``, composed over ``configs/datasets/<name>/
defaults.yaml``) carries the settings of that dataset's evaluation. This module knows
every such key, checks the values that do not depend on the task, and turns the checked
mapping into one frozen `EvalSettings`, which resolves per-family values once the model
is known.

Keys (all optional):

``inference``      ``generate`` or ``rank``.
``prompt``         the instruction; each ``{}`` is filled from the sample (task field order).
``prompt_fields``  which sample fields fill the placeholders, in order (default: the last
                   n of the task's documented `PROMPT_FIELDS`, n = number of ``{}``).
``generate``       keyword arguments of the model's ``generate`` (its own signature says
                   which: `BaseModel.generation_settings`).
``append_eos``     rank: score each candidate with EOS appended (absent: the model's
                   ``default_append_eos``).
``candidates``     rank: where candidates come from (task-specific, see each task).
``metric``         which metric set (task-specific).
``eval_subset``, ``eval_splits``   read by the evaluation loop, accepted here.

A per-family value is a mapping keyed by ``model.llm_family`` (the family names are the
model's, e.g. ``length_penalty: {<family>: 0, <other family>: -1}``); evaluating a model
whose family the mapping lacks is a `ConfigError` naming dataset, key and family.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Mapping

from lavis_ib.common.config import TASK_SETTING_KEYS
from lavis_ib.common.containers import to_plain
from lavis_ib.common.errors import ConfigError, did_you_mean

RUNNER_KEYS = frozenset({"eval_subset", "eval_splits"})
# Every per-dataset evaluation key; a task that reads a subset rejects the others.
ALL_EVAL_KEYS = frozenset(TASK_SETTING_KEYS) | RUNNER_KEYS
# Keys of builder defaults that look like evaluation keys but are not (never flagged).
_BUILDER_KEYS = frozenset({"task", "type", "data_type", "build_info", "vis_processor",
                           "text_processor", "sample_ratio", "cache_root", "template_family",
                           "templates", "num_frames", "answer_list", "download",
                           "max_history_chars", "num_samples", "builder"})
INFERENCE_MODES = ("generate", "rank")


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


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """The checked settings of one dataset's evaluation (parsed once, by `for_dataset`).

    `extra` holds settings a task of its own adds in `_check_settings`.
    """

    dataset: str
    inference: str = "generate"
    prompt: str = ""
    prompt_fields: tuple[str, ...] = ()
    generate: Mapping[str, Any] | None = None
    append_eos: Any = None
    candidates: Any = None
    metric: str | None = None
    eval_splits: Any = None
    eval_subset: int | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    _FIELDS = ("inference", "prompt", "prompt_fields", "generate", "append_eos",
               "candidates", "metric", "eval_splits", "eval_subset")

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

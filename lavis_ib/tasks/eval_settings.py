"""Per-dataset evaluation settings: parsing, checking and prompt filling.

A project's ``datasets.<name>`` entry carries the settings of that dataset's evaluation
(DESIGN.md "Projects, tasks and evaluation"). This module is the one place that knows
every such key, which generation keyword arguments the model accepts, how a prompt's
``{}`` placeholders are filled, and how a family-dependent value (``append_eos``,
``length_penalty``) is resolved once the model is known.

Keys (all optional; the dataset's defaults in `zeroshot_defaults` apply first):

``inference``      ``generate`` or ``rank``.
``prompt``         the instruction; each ``{}`` is filled from the sample (see `fill_prompt`).
``prompt_fields``  which sample fields fill the placeholders, in order (default: the last
                   n of the task's documented `PROMPT_FIELDS`, n = number of ``{}``).
``generate``       keyword arguments of ``model.generate`` (`GENERATE_KEYS`).
``append_eos``     rank: score each candidate with EOS appended (``auto``: per LLM family,
                   Vicuna False, FlanT5 True, PAPER.md).
``candidates``     rank: where candidates come from (task-specific, see each task).
``metric``         which accuracy (vqa-style tasks): see `lavis_ib.tasks.vqa_metrics`.
``eval_subset``, ``eval_splits``   read by the evaluation loop (runner), accepted here.
"""
from __future__ import annotations

import difflib
import re
from typing import Any, Mapping, Sequence

from lavis_ib.common.containers import to_plain as plain
from lavis_ib.common.errors import ConfigError, DataError, did_you_mean

# Every per-dataset evaluation key; a task that reads a subset rejects the others.
ALL_EVAL_KEYS = frozenset({
    "inference", "prompt", "prompt_fields", "generate", "append_eos", "candidates",
    "metric", "eval_subset", "eval_splits",
})
RUNNER_KEYS = frozenset({"eval_subset", "eval_splits"})
# Keys of builder defaults that look like evaluation keys but are not (never flagged).
_BUILDER_KEYS = frozenset({"task", "type", "data_type", "build_info", "vis_processor",
                           "text_processor", "sample_ratio", "cache_root", "template_family",
                           "templates", "num_frames", "answer_list", "download",
                           "max_history_chars", "num_samples"})
# model.generate's keyword arguments (CONTRACTS.md, Model API).
GENERATE_KEYS = frozenset({"use_nucleus_sampling", "num_beams", "max_length", "min_length",
                           "top_p", "repetition_penalty", "length_penalty", "num_captions",
                           "temperature"})
INFERENCE_MODES = ("generate", "rank")
FAMILIES = ("vicuna", "flant5")
_PLACEHOLDER = re.compile(r"\{\}")


def check_misspelt_keys(name: str, cfg: Mapping[str, Any]) -> None:
    """Raise for a key that is not an evaluation key but looks like a misspelt one."""
    for key in cfg:
        key = str(key)
        if key in ALL_EVAL_KEYS or key in _BUILDER_KEYS:
            continue
        # a strict cutoff: builders may add keys of their own that merely resemble ours
        matches = difflib.get_close_matches(key, sorted(ALL_EVAL_KEYS), n=1, cutoff=0.75)
        if matches:
            match = matches[0]
            raise ConfigError(f"datasets.{name}.{key}: not an evaluation setting. "
                              f"Did you mean '{match}'? Evaluation settings: "
                              f"{', '.join(sorted(ALL_EVAL_KEYS))}.")


def check_generate(name: str, generate: Any) -> dict[str, Any]:
    """The `generate` mapping, checked against model.generate's keyword arguments."""
    generate = plain(generate)
    if generate is None:
        return {}
    if not isinstance(generate, Mapping):
        raise ConfigError(f"datasets.{name}.generate must be a mapping of generate() "
                          f"arguments, e.g. {{num_beams: 5, max_length: 10}}; got {generate!r}.")
    for key, value in generate.items():
        if key not in GENERATE_KEYS:
            raise ConfigError(f"datasets.{name}.generate.{key}: model.generate has no such "
                              f"argument.{did_you_mean(key, GENERATE_KEYS)} Arguments: "
                              f"{', '.join(sorted(GENERATE_KEYS))}.")
        check_family_value(f"datasets.{name}.generate.{key}", value)
    return dict(generate)


def check_family_value(where: str, value: Any) -> None:
    """A value may be given per LLM family: ``{vicuna: 0, flant5: -1}``."""
    if isinstance(value, Mapping):
        missing = [f for f in FAMILIES if f not in value]
        extra = [k for k in value if k not in FAMILIES]
        if missing or extra:
            raise ConfigError(f"{where}: a per-family value needs exactly the keys "
                              f"{', '.join(FAMILIES)}; got {', '.join(map(str, value))}.")


def model_family(model: Any) -> str:
    """'vicuna' (decoder-only LLM) or 'flant5' (encoder-decoder LLM) of a model.

    Looks, in order, at ``model.llm_family``, the LLM config's ``is_encoder_decoder`` and
    the model type's name.

    Raises:
        ConfigError: when none of these tells the family.
    """
    family = getattr(model, "llm_family", None)
    if isinstance(family, str):
        family = family.lower()
        if "t5" in family:
            return "flant5"
        if family in ("vicuna", "llama", "decoder", "causal"):
            return "vicuna"
    for attr in ("llm_model", "llm", "language_model", "t5_model"):
        llm = getattr(model, attr, None)
        is_ed = getattr(getattr(llm, "config", None), "is_encoder_decoder", None)
        if isinstance(is_ed, bool):
            return "flant5" if is_ed else "vicuna"
    model_type = str(getattr(model, "model_type", "") or "")
    if "t5" in model_type:
        return "flant5"
    if "vicuna" in model_type or "llama" in model_type:
        return "vicuna"
    raise ConfigError(f"cannot tell the LLM family of {type(model).__name__}: set "
                      f"append_eos / per-family values explicitly in the project.")


def resolve_family_value(value: Any, model: Any) -> Any:
    """`value`, or its entry for the model's family when it is a per-family mapping."""
    if isinstance(value, Mapping):
        return value[model_family(model)]
    return value


def count_placeholders(prompt: str) -> int:
    return len(_PLACEHOLDER.findall(prompt))


def fill_prompt(prompt: str, values: Sequence[str]) -> str:
    """Replace each ``{}`` in order by the next value (other braces stay literal)."""
    it = iter(values)
    return _PLACEHOLDER.sub(lambda _m: str(next(it)), prompt)


def format_ocr_tokens(tokens: Any, max_tokens: int = 30) -> str:
    """OCR tokens as in PAPER.md: the first 30, comma-joined."""
    if tokens is None:
        return ""
    if isinstance(tokens, str):
        return tokens
    return ", ".join(str(t) for t in list(tokens)[:max_tokens])


def format_options(choices: Sequence[str]) -> str:
    """Options with letter labels: ``(a) x (b) y``."""
    if len(choices) > 26:
        raise DataError(f"{len(choices)} options: at most 26 can carry letter labels (a)-(z).")
    return " ".join(f"({chr(ord('a') + i)}) {c}" for i, c in enumerate(choices))

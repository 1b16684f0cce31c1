"""Generation settings in one home: `generate`'s defaults per model, the short-answer preset
`lavis-ib predict` and `lavis-ib serve` start from, the one range check every entry point
applies, and the rule that fits a default `max_length` into the LLM's context. Imports
nothing heavy: the command lines check settings with it before a model loads.
"""
from __future__ import annotations

import dataclasses
import logging
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSettings:
    """The keyword settings of a Q-Former model's `generate` (LAVIS's names)."""

    use_nucleus_sampling: bool = False  # sample from the top-p nucleus instead of beam search
    num_beams: int = 5                  # beams of beam search (1: greedy)
    max_length: int = 256               # generated tokens at most (fitted to the context)
    min_length: int = 1                 # generated tokens at least
    top_p: float = 0.9                  # probability mass of the nucleus (sampling)
    repetition_penalty: float = 1.5     # > 1 discourages repeating a generated token
    length_penalty: float = 1.0         # beam scores divided by length ** this (> 0 favours long)
    num_captions: int = 1               # texts returned per image
    temperature: float = 1.0            # softmax temperature (sampling)

    def pick(self, keys: Iterable[str]) -> dict[str, Any]:
        """{key: value} of the named settings, in the given order."""
        return {k: getattr(self, k) for k in keys}

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class AnswerSettings:
    """The defaults of a Q-Former model's `predict_answers` (LAVIS's names); the settings it
    does not pass (the repetition penalty among them) are `generate`'s defaults."""

    num_beams: int = 5                  # beams of beam search
    max_len: int = 10                   # generated tokens at most
    min_len: int = 1                    # generated tokens at least
    length_penalty: float | None = None  # None: the LLM family's (see `answer_length_penalty`)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def answer_length_penalty(is_encoder_decoder: bool) -> float:
    """`predict_answers`' length penalty when none is given: -1 for an encoder-decoder LLM
    (LAVIS's T5 models), 0 for a decoder-only one (LAVIS's Vicuna and OPT models)."""
    return -1.0 if is_encoder_decoder else 0.0


#: LAVIS's InstructBLIP `generate` defaults (`instructblip`)
INSTRUCTBLIP = GenerationSettings()
#: LAVIS's BLIP-2 `generate` defaults, the same in its `blip2_opt` and `blip2_t5`; also
#: `blip2_llm`'s (the decoder-only BLIP-2 layout of `blip2_opt` with any causal LM)
BLIP2 = GenerationSettings(max_length=30, repetition_penalty=1.0)
#: `generate`'s defaults per registered model (a test holds each model's `generate`
#: signature to its entry)
MODEL_DEFAULTS = {"instructblip": INSTRUCTBLIP, "blip2_opt": BLIP2, "blip2_t5": BLIP2,
                  "blip2_llm": BLIP2}
#: `predict_answers`' defaults per registered model: the same for all (LAVIS's values,
#: its length penalty by LLM family); they differ through `generate`'s defaults
ANSWERS = AnswerSettings()
ANSWER_DEFAULTS = {name: ANSWERS for name in MODEL_DEFAULTS}

#: short answers to a question about one image (`lavis-ib predict`, `lavis-ib serve`): beam
#: search as in the paper's evaluation, at most 30 tokens
SHORT_ANSWER = dataclasses.replace(INSTRUCTBLIP, max_length=30)

#: a max-length control's upper end for a model whose LLM context does not bound it
#: (an encoder-decoder LLM, a plugin model)
UNBOUNDED_MAX_LENGTH = 512


class ContextFitted(int):
    """A `max_length` default that `generate` may lower to fit the LLM's context (an int
    everywhere else; an explicit `max_length` is a plain int and is never lowered)."""

    def __repr__(self) -> str:
        return int.__repr__(self)


# -- the one range check ------------------------------------------------------------------
#: (setting, its range's test, the words of its error), in the order problems are reported
_RANGES: tuple[tuple[str, Callable[[float], bool], str], ...] = (
    ("num_beams", lambda v: v >= 1, "must be at least 1"),
    ("max_length", lambda v: v >= 1, "must be at least 1"),
    ("min_length", lambda v: v >= 0, "must be at least 0"),
    ("top_p", lambda v: 0 < v <= 1, "must be in (0, 1]"),
    ("temperature", lambda v: v > 0, "must be above 0"),
    ("repetition_penalty", lambda v: v > 0, "must be above 0"),
    ("num_captions", lambda v: v >= 1, "must be at least 1"),
    ("max_new_tokens", lambda v: v >= 1, "must be at least 1"),
    ("top_k", lambda v: v >= 0 and float(v).is_integer(), "must be a whole number, at least 0"),
)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def range_problems(settings: Mapping[str, Any], name: Callable[[str], str] = str) -> list[str]:
    """Every setting of `settings` outside its range (settings absent are not checked), one
    phrase each; `name(key)` is how the entry point calls a setting (a flag, a label).
    `generate`, `lavis-ib predict` and `lavis-ib serve` all check with this."""
    out = []
    for key, test, words in _RANGES:
        if key not in settings:
            continue
        value = settings[key]
        if not _is_number(value):
            out.append(f"{name(key)} must be a number")
        elif not test(value):
            out.append(f"{name(key)} {words}")
        if key == "min_length" and _is_number(value) and \
                _is_number(settings.get("max_length")) and value > settings["max_length"]:
            out.append(f"{name('min_length')} must not exceed {name('max_length')}")
    return out


# -- transformers' names -----------------------------------------------------------------
#: transformers' name -> ours, for the settings `generate` accepts under both spellings
TRANSFORMERS_NAMES = {"max_new_tokens": "max_length", "do_sample": "use_nucleus_sampling"}


def merge_transformers_names(settings: dict[str, Any], max_new_tokens: int | None = None,
                             do_sample: bool | None = None) -> dict[str, Any]:
    """`settings` (our names) with transformers' `max_new_tokens` / `do_sample` mapped
    onto `max_length` / `use_nucleus_sampling`. A `max_length` that is still its default
    (`ContextFitted`) or `use_nucleus_sampling=False` yields to the transformers name;
    both spellings given with different values is a `ValueError` naming both."""
    out = dict(settings)
    if max_new_tokens is not None:
        ours = out.get("max_length")
        if ours is not None and not isinstance(ours, ContextFitted) and ours != max_new_tokens:
            raise ValueError(f"max_new_tokens={max_new_tokens!r} and max_length={ours!r} are "
                             f"the same setting (generated tokens at most) with different "
                             f"values; give one")
        out["max_length"] = max_new_tokens
    if do_sample is not None:
        ours = out.get("use_nucleus_sampling")
        if ours and not do_sample:
            raise ValueError(f"do_sample={do_sample!r} and use_nucleus_sampling={ours!r} are "
                             f"the same setting (sample instead of beam search or greedy) "
                             f"with different values; give one")
        out["use_nucleus_sampling"] = bool(do_sample)
    return out


# -- the context rule ---------------------------------------------------------------------
def fitted_max_length(default: int, room: int | None, prompt_tokens: int) -> int:
    """The default `max_length`, lowered to what the LLM's context has left after the soft
    prompts and the prompt: `room` is the context less the soft prompts (None: the
    context sets no limit), `prompt_tokens` the longest prompt of the batch (at most
    `room - 1`: longer prompts are cut before this is asked). A lowered default is logged."""
    if room is None or room - prompt_tokens >= default:
        return int(default)
    fitted = room - prompt_tokens
    logger.debug("max_length default %d lowered to %d: the LLM context has %d tokens beside "
                 "the soft prompts and the longest prompt has %d", int(default), fitted, room,
                 prompt_tokens)
    return fitted



# -- prompt limits ------------------------------------------------------------------------
#: the prompt tokens an encoder-decoder LLM (FlanT5) reads at inference. LAVIS's T5 models
#: never cut an inference prompt, and T5's relative positions set no limit, but the encoder
#: costs time and memory in the square of the prompt's length (8,000 characters through
#: `lavis-ib serve` took 34 s and 2.2 GB with the tiny FlanT5). 2048 is above every shipped
#: evaluation prompt, so LAVIS's results are unchanged: tests/models/test_prompt_limits.py
#: fills each shipped template with a bound per field (30 OCR tokens, as capped in code, of
#: 30 characters; a 1,000-character ScienceQA hint; a 1,400-character VisDial history ...)
#: and counts one token per character, more than any T5 vocabulary makes; the longest is
#: ScienceQA's `Context: {} Question: {} Options: {}. Answer:` at 1,749, VisDial's next.
ENCODER_DECODER_MAX_PROMPT_TOKENS = 2048
#: characters `lavis-ib serve` takes in one prompt (`--max-prompt-chars`); counted before
#: the prompt is tokenized, so a megabyte of text is refused at once
SERVE_MAX_PROMPT_CHARS = 2000

#: what an entry point does with a prompt over the model's prompt-token limit
CUT, REFUSE, CUT_HISTORY = "cut", "refuse", "cut history"


@dataclass(frozen=True)
class PromptLimit:
    """One entry point's rule for prompts over the model's prompt-token limit (the LLM
    context's room beside the soft prompts and the tokens to generate or score for a
    decoder-only LLM, `max_prompt_tokens` for an encoder-decoder one)."""

    over_limit: str                 # CUT | REFUSE | CUT_HISTORY
    counted_in: str                 # where a cut or a refusal shows
    max_chars: int | None = None    # characters refused before tokenizing (None: not counted)


#: the rule of each entry point. A cut keeps the prompt's end (the question) and drops its
#: start, is counted in the adapter's `num_truncated` and logged once per model.
PROMPT_LIMITS: dict[str, PromptLimit] = {
    "api": PromptLimit(CUT, "model.inference_counts()['num_truncated']"),
    "predict": PromptLimit(CUT, "the closing log line of lavis-ib predict"),
    "evaluate": PromptLimit(CUT, "num_truncated in the split's metrics.json"),
    "serve": PromptLimit(REFUSE, "the page's status line", max_chars=SERVE_MAX_PROMPT_CHARS),
    # a chat's history is cut by whole turns, oldest first (`model.chat`); the current
    # turn alone over the limit is then cut as "api" cuts it
    "chat": PromptLimit(CUT_HISTORY, "model.chat_counts()['turns_dropped'] and the chat's "
                                     "status line"),
}


def prompt_refusal(prompt: str, max_chars: int | None, count_tokens: Callable[[str], int],
                   max_tokens: int | None, chars_from: str, tokens_from: str) -> str | None:
    """Why an entry point that refuses over-limit prompts refuses `prompt`, or None.
    Characters are counted first, so a long text is refused without being tokenized;
    then tokens (`count_tokens(prompt)` against `max_tokens`; None: no token limit).
    `chars_from` / `tokens_from` say what sets each limit, for the message."""
    if max_chars is not None and len(prompt) > max_chars:
        return (f"Prompt: {len(prompt):,} characters; {chars_from} takes at most "
                f"{max_chars:,}. Shorten it.")
    if max_tokens is None:
        return None
    tokens = count_tokens(prompt)
    if tokens > max_tokens:
        return (f"Prompt: {tokens:,} tokens; {tokens_from} reads at most {max_tokens:,}. "
                f"Shorten it.")
    return None

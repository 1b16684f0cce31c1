"""Prompt text shared by datasets, tasks and models: `{}` placeholders, OCR tokens, turns.

One place decides how OCR tokens are written (the first 30, comma-joined, as the authors'
code does) and how a prompt's ``{}`` placeholders are filled, so a training instruction,
an evaluation prompt and a direct `model.generate` call never format them differently.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

from lavis_ib.common.errors import DataError

OCR_MAX_TOKENS = 30
_PLACEHOLDER = re.compile(r"\{\}")


def format_ocr_tokens(tokens: Any, max_tokens: int = OCR_MAX_TOKENS) -> str:
    """The first `max_tokens` OCR tokens, comma-joined ('' for none; a string as given)."""
    if tokens is None:
        return ""
    if isinstance(tokens, str):
        return tokens
    return ", ".join(str(t) for t in list(tokens)[:max_tokens])


def ocr_prefix(tokens: Sequence[str] | None, max_tokens: int = OCR_MAX_TOKENS) -> str:
    """'OCR tokens: t1, t2, ... . ' before an instruction, or '' without tokens."""
    text = format_ocr_tokens(list(tokens or []), max_tokens)
    return f"OCR tokens: {text}. " if text else ""


def format_options(choices: Sequence[Any]) -> str:
    """Options with letter labels, ``(a) x (b) y``, as the authors' multiple-choice prompts."""
    if len(choices) > 26:
        raise DataError(f"{len(choices)} options: at most 26 can carry letter labels (a)-(z).")
    return " ".join(f"({chr(ord('a') + i)}) {c}" for i, c in enumerate(choices))


def count_placeholders(prompt: str) -> int:
    return len(_PLACEHOLDER.findall(prompt))


def fill_placeholders(prompt: str, values: Sequence[Any]) -> str:
    """Replace each ``{}`` in order by the next value; other braces stay literal, and
    braces inside a value are never re-read (unlike `str.format`)."""
    if count_placeholders(prompt) != len(values):
        raise ValueError(f"prompt {prompt!r} has {count_placeholders(prompt)} '{{}}' "
                         f"placeholder(s) for {len(values)} value(s).")
    it = iter(values)
    return _PLACEHOLDER.sub(lambda _m: str(next(it)), prompt)


def history_turn(question: str, answer: str) -> str:
    """An earlier (question, answer) turn as one line of an instruction: the format of
    LLaVA-Instruct training samples and of `model.chat`, so a chat reads what was learnt."""
    return f"USER: {question} ASSISTANT: {answer}"


def format_chat(history: Sequence[tuple[str, str]], question: str) -> str:
    """Earlier turns as lines, then the current question as it is (a one-turn
    conversation's instruction is its question)."""
    return "\n".join([*(history_turn(q, a) for q, a in history), question])

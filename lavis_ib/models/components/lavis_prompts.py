"""How the LAVIS API of a model turns a batch into prompts, for direct callers.

`generate`, `predict_answers` and `predict_class` accept LAVIS's batches unchanged (`{}`
slots filled from the batch, `predict_class`'s prefixes), so LAVIS code runs as it is;
evaluation tasks format their prompts themselves and pass them verbatim."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from lavis_ib.common.errors import LavisIbError
from lavis_ib.common.prompts import (count_placeholders, fill_placeholders, format_ocr_tokens,
                                     format_options)


def fill_prompt(prompt: str, text_input: Any = None, ocr_tokens: Sequence[str] | None = None,
                choices: Sequence[str] | None = None) -> str:
    """Fill LAVIS-style `{}` slots of one sample's prompt.

    One slot takes `text_input`; a list `text_input` fills the slots in order; two slots
    take the OCR tokens (first 30, comma-joined) and the question (TextVQA), or the
    question and the lettered options `(a) x (b) y` (multiple choice).

    Raises:
        LavisIbError: slots that cannot be filled unambiguously (format such prompts
            before calling the model).
    """
    slots = count_placeholders(prompt)
    if slots == 0:
        return prompt
    if isinstance(text_input, (list, tuple)) and len(text_input) == slots:
        return fill_placeholders(prompt, list(text_input))
    if slots == 1 and text_input is not None:
        return fill_placeholders(prompt, [text_input])
    if slots == 2 and text_input is not None and ocr_tokens is not None:
        return fill_placeholders(prompt, [format_ocr_tokens(ocr_tokens), text_input])
    if slots == 2 and text_input is not None and choices is not None:
        return fill_placeholders(prompt, [text_input, format_options(list(choices))])
    raise LavisIbError(
        f"prompt {prompt!r} has {slots} '{{}}' slot(s) but the batch gives "
        f"{'a' if text_input is not None else 'no'} text_input, "
        f"{'' if ocr_tokens is not None else 'no '}ocr_tokens and "
        f"{'' if choices is not None else 'no '}choices; one slot takes text_input, two take "
        f"ocr_tokens and text_input or text_input and choices; format other prompts before "
        f"calling the model.")


def class_prompt_prefixes(samples: Mapping[str, Any], prompts: list[str]) -> list[str]:
    """The prefixes LAVIS's InstructBLIP `predict_class` puts before each prompt.

    In LAVIS's order and with its tests: `context: {c}. ` whenever the batch has
    `context` (an empty context still gives `context: . `), `dialog history: {h}\\n` and
    `This image has the caption "{c}". ` when the first sample's value is non-empty; each
    later prefix goes in front of the earlier ones.
    """
    def column(key: str) -> list[Any]:
        values = samples[key]
        values = [values] * len(prompts) if isinstance(values, str) else list(values)
        if len(values) != len(prompts):
            raise LavisIbError(f"{key}: {len(values)} entries for a batch of {len(prompts)}.")
        return values

    if "context" in samples:
        prompts = [f"context: {c}. {p}" for c, p in zip(column("context"), prompts)]
    if "history" in samples and column("history")[0] != "":
        prompts = [f"dialog history: {h}\n{p}" for h, p in zip(column("history"), prompts)]
    if "caption" in samples and column("caption")[0] != "":
        prompts = [f'This image has the caption "{c}". {p}'
                   for c, p in zip(column("caption"), prompts)]
    return prompts

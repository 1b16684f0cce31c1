"""LLaVA-Instruct-150K: one training sample per assistant turn.

Every assistant turn trains, each with the conversation so far as its instruction, so the
answers of a multi-turn conversation are learnt in context (format and rule: `LlavaDataset`)."""
from __future__ import annotations

import re
from typing import Any

from lavis_ib.common.errors import DataError
from lavis_ib.common.prompts import format_chat
from lavis_ib.datasets.datasets.annotations import load_json, media_field, need
from lavis_ib.datasets.datasets.base import BaseDataset

_IMAGE_TAG = re.compile(r"\s*<image>\s*")


def clean_turn(text: str) -> str:
    return _IMAGE_TAG.sub(" ", str(text)).strip()


def conversation_instruction(history: list[tuple[str, str]], question: str,
                             max_chars: int | None = None) -> str:
    """Earlier (question, answer) turns as ``USER: q ASSISTANT: a`` lines + the question.

    Whole earlier turns are dropped from the left while the instruction is longer than
    `max_chars` (the model truncates its instruction tokens from the left too).
    """
    kept = list(history)
    while kept and max_chars and len(format_chat(kept, question)) > max_chars:
        kept.pop(0)
    return format_chat(kept, question)


class LlavaDataset(BaseDataset):
    """Training only: ``image``, ``text_input`` (the conversation so far), ``text_output``.

    Official format (conversation_58k.json, detail_23k.json, complex_reasoning_77k.json):
    ``[{"id", "image": "<COCO train2017 file name>", "conversations": [{"from": "human"|"gpt",
    "value"}, ...]}]``. The ``<image>`` marker is removed. For turn k the instruction is the
    conversation so far (docs/protocol.md, `conversation_instruction`) and the target is
    turn k's answer. No templates, no text normalisation.
    """

    is_train = True

    @classmethod
    def extra_args(cls) -> dict[str, Any]:
        return {"max_history_chars": 2000}

    def load_annotations(self, ann_paths: list[str]) -> list[dict[str, Any]]:
        samples = []
        for path in ann_paths:
            for n, record in enumerate(load_json(path)):
                turns = need(record, "conversations", path)
                image, history = media_field(record, "image", path, n), []
                for j in range(0, len(turns) - 1, 2):
                    user, bot = turns[j], turns[j + 1]
                    if user.get("from") != "human" or bot.get("from") != "gpt":
                        raise DataError(f"'{path}' record {record.get('id')}: turns must alternate "
                                        f"human/gpt, got {user.get('from')}/{bot.get('from')} at {j}.")
                    q, a = clean_turn(user["value"]), clean_turn(bot["value"])
                    samples.append({"image": image, "id": f"{record.get('id')}_{j // 2}",
                                    "instruction": conversation_instruction(
                                        history, q, self.options["max_history_chars"]),
                                    "answer": a})
                    history.append((q, a))
        return samples

    def build_sample(self, record: dict[str, Any], visual: Any, index: int, epoch: int) -> dict[str, Any]:
        return {"image": visual, "text_input": record["instruction"], "text_output": record["answer"]}

"""`my_vqa`: a question-answering dataset added by decorator (docs/adding_a_dataset.md).

Annotation format: JSON Lines, one file per split, one question per line::

    {"question_id": "q1", "image": "001.jpg", "question": "What is on the table?",
     "answers": ["a cup", "cup", "a cup"]}

``image`` is relative to ``build_info.images.storage``; ``answers`` lists every
annotator's answer, duplicates kept (training draws one by frequency, evaluation scores
against all of them). Import this module through a project's ``plugins:`` list.
"""
from __future__ import annotations

import json
import os
from typing import Any

from lavis_ib import registry
from lavis_ib.common.errors import DataError
from lavis_ib.datasets.builders import BaseDatasetBuilder
from lavis_ib.datasets.datasets.base import BaseDataset, draw_by_frequency, make_instruction
from lavis_ib.processors.text import normalize_question

FIELDS = ("question_id", "image", "question", "answers")


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """The records of one annotation file, each checked for the four fields."""
    records = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line_no}: not valid JSON ({exc.msg}).") from None
            missing = [k for k in FIELDS if k not in record]
            if missing:
                raise DataError(f"{path}:{line_no}: the record lacks {missing}; every line "
                                f"needs {list(FIELDS)}.")
            records.append(record)
    return records


class MyVQADataset(BaseDataset):
    """Training split: ``image``, ``text_input`` (a templated question), ``text_output``
    (one human answer, drawn by frequency)."""

    is_train = True  # index i >= len is (epoch, i % len): a new template draw each pass

    def load_annotations(self, ann_paths: list[str]) -> list[dict[str, Any]]:
        records = [r for path in ann_paths for r in read_jsonl(path)]
        unanswered = [r["question_id"] for r in records if not r["answers"]]
        if unanswered:
            raise DataError(f"{type(self).__name__}: {len(unanswered)} training records have no "
                            f"answer (e.g. {unanswered[0]!r}) in {ann_paths}.")
        return records

    def build_sample(self, record: dict[str, Any], visual: Any, index: int,
                     epoch: int) -> dict[str, Any]:
        # Every random choice is seeded by (seed, epoch, index): rank- and worker-independent.
        answer = draw_by_frequency(record["answers"], self.rng(index, epoch))
        instruction = make_instruction(self.text_processor, index, epoch,
                                       question=record["question"])
        return {"image": visual, "text_input": instruction, "text_output": answer}


class MyVQAEvalDataset(BaseDataset):
    """Val/test splits: the keys the ``vqa`` task reads (docs/architecture.md, sample keys)."""

    def load_annotations(self, ann_paths: list[str]) -> list[dict[str, Any]]:
        return [r for path in ann_paths for r in read_jsonl(path)]

    def build_sample(self, record: dict[str, Any], visual: Any, index: int,
                     epoch: int) -> dict[str, Any]:
        question = str(record["question"])
        text = self.text_processor(question) if self.text_processor else normalize_question(question)
        return {"image": visual, "question_id": record["question_id"], "question": question,
                "text_input": text, "answers": [str(a) for a in record["answers"]]}


@registry.register_builder("my_vqa")
class MyVQABuilder(BaseDatasetBuilder):
    """Split "train" -> MyVQADataset; every other split -> MyVQAEvalDataset."""

    train_dataset_cls = MyVQADataset
    eval_dataset_cls = MyVQAEvalDataset
    # An absolute path: the YAML lies next to this module, not inside lavis_ib.
    DATASET_CONFIG_DICT = {"default": os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                   "my_vqa.yaml")}
    DATA_SOURCE = "the my_vqa annotation export (JSON Lines, see docs/adding_a_dataset.md)"

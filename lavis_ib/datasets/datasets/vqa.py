"""Question-answering datasets: training (templated question -> one answer drawn by
frequency), question generation (templated answer -> question) and evaluation.

One set of classes for every VQA dataset: the formats differ only in their readers
(`vqa_formats`), so samples, templates and OCR prefixes are built the same way for all."""
from __future__ import annotations

from typing import Any

from lavis_ib.common.errors import DataError
from lavis_ib.datasets.datasets.annotations import load_ocr_tokens
from lavis_ib.datasets.datasets.base import BaseDataset, draw_by_frequency, make_instruction
from lavis_ib.datasets.datasets.vqa_formats import READERS
from lavis_ib.common.prompts import ocr_prefix
from lavis_ib.processors.text import normalize_question


class _QABase(BaseDataset):
    """Reads records with `READERS[ann_format]` and attaches OCR tokens.

    With ``use_ocr=True`` the instruction starts with ``OCR tokens: t1, t2, ... (first 30).
    `` (docs/protocol.md); tokens come from the record itself or from the OCR files in
    `ocr_paths`, keyed by image id.
    """

    READERS = READERS

    @classmethod
    def extra_args(cls) -> dict[str, Any]:
        return {"ann_format": "lavis", "split": None, "use_ocr": False, "ocr_paths": ()}

    def load_annotations(self, ann_paths: list[str]) -> list[dict[str, Any]]:
        fmt = self.options["ann_format"]
        if fmt not in self.READERS:
            from lavis_ib.common.errors import ConfigError, did_you_mean

            raise ConfigError(f"{type(self).__name__}: unknown ann_format '{fmt}'."
                              f"{did_you_mean(fmt, self.READERS)} Known: {', '.join(self.READERS)}.")
        records = self.READERS[fmt](ann_paths, self.options["split"])
        if self.options["use_ocr"]:
            ocr = load_ocr_tokens(list(self.options["ocr_paths"] or ()))
            for rec in records:
                if "ocr_tokens" not in rec:
                    rec["ocr_tokens"] = ocr.get(str(rec.get("ocr_key")), [])
        return self.check_records(records)

    def check_records(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return records

    def ocr_text(self, record: dict[str, Any]) -> str:
        return ocr_prefix(record.get("ocr_tokens")) if self.options["use_ocr"] else ""


class VQADataset(_QABase):
    """Training: ``text_input`` = [OCR prefix] + templated question, ``text_output`` = one
    human answer drawn with probability proportional to its count (seeded per sample)."""

    is_train = True
    uses_template = True

    def check_records(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        unlabelled = sum(1 for r in records if not r["answers"])
        if unlabelled == len(records) and records:
            raise DataError(f"{type(self).__name__}: no record of {self.ann_paths} has an answer; "
                            f"a test split cannot train (list its annotations file too).")
        return [r for r in records if r["answers"]]

    def build_sample(self, record: dict[str, Any], visual: Any, index: int, epoch: int) -> dict[str, Any]:
        answer = draw_by_frequency(record["answers"], self.rng(index, epoch))
        instruction = make_instruction(self.text_processor, index, epoch, question=record["question"])
        return {"image": visual, "text_input": self.ocr_text(record) + instruction,
                "text_output": answer.strip()}


class QGDataset(VQADataset):
    """Question generation: the QA pair inverted. ``text_input`` = QG template filled with
    an answer drawn by frequency, ``text_output`` = the question."""

    def build_sample(self, record: dict[str, Any], visual: Any, index: int, epoch: int) -> dict[str, Any]:
        answer = draw_by_frequency(record["answers"], self.rng(index, epoch))
        instruction = make_instruction(self.text_processor, index, epoch, answer=answer)
        return {"image": visual, "text_input": self.ocr_text(record) + instruction,
                "text_output": str(record["question"]).strip()}


class VQAEvalDataset(_QABase):
    """Evaluation: ``question_id``, raw ``question``, normalised ``text_input``, every human
    answer in ``answers``; plus ``ocr_tokens``, ``choices``/``correct_choice_idx``,
    ``context`` and A-OKVQA's ``difficult_direct_answer`` when the format has them."""

    OPTIONAL_KEYS = ("choices", "correct_choice_idx", "context", "difficult_direct_answer")

    def build_sample(self, record: dict[str, Any], visual: Any, index: int, epoch: int) -> dict[str, Any]:
        question = str(record["question"])
        text = self.text_processor(question) if self.text_processor else normalize_question(question)
        sample = {"image": visual, "question_id": record["question_id"], "question": question,
                  "text_input": text, "answers": list(record["answers"])}
        if self.options["use_ocr"]:
            sample["ocr_tokens"] = list(record.get("ocr_tokens", []))
        for key in self.OPTIONAL_KEYS:
            if key in record:
                sample[key] = record[key]
        return sample

"""Readers of the question-answering annotation formats into one record layout.

Each official format is read as downloaded (no conversion step), into the records that
`READERS` describes, so the VQA dataset classes never see a format; each reader's docstring
names its files and fields."""
from __future__ import annotations

import os
from typing import Any, Callable

from lavis_ib.common.errors import DataError
from lavis_ib.datasets.datasets.annotations import load_json, load_records, media_field, need

OCRVQA_SPLITS = {"train": 1, "val": 2, "test": 3}


def _answers(values: Any) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        return [values]
    return [str(v["answer"]) if isinstance(v, dict) else str(v) for v in values]


def read_vqav2(paths: list[str], split: str | None = None) -> list[dict[str, Any]]:
    """`ann_format: vqav2`, official VQA v2 / OK-VQA: `*_questions.json` ``{"data_subtype",
    "questions": [{"question_id", "image_id", "question"}]}`` plus, when labelled,
    `*_annotations.json` ``{"annotations": [{"question_id", "answers": [{"answer"}]}]}``;
    image ``<data_subtype>/COCO_<data_subtype>_<image_id:012d>.jpg``."""
    questions, answers, subtype = [], {}, None
    for path in paths:
        data = load_json(path)
        if isinstance(data, dict) and "questions" in data:
            subtype = data.get("data_subtype", subtype)
            questions.extend((q, data.get("data_subtype"), path) for q in data["questions"])
        elif isinstance(data, dict) and "annotations" in data:
            for ann in data["annotations"]:
                answers[need(ann, "question_id", path)] = _answers(need(ann, "answers", path))
        else:
            raise DataError(f"'{path}' is neither a VQA questions file (key 'questions') nor an "
                            f"annotations file (key 'annotations').")
    if not questions:
        raise DataError(f"no VQA questions file among {paths}; list the *_questions.json file.")
    records = []
    for q, sub, path in questions:
        sub = sub or subtype
        if not sub:
            raise DataError(f"'{path}' has no 'data_subtype' (e.g. train2014) to name its images.")
        qid = need(q, "question_id", path)
        records.append({"question_id": qid, "question": need(q, "question", path),
                        "image": f"{sub}/COCO_{sub}_{int(need(q, 'image_id', path)):012d}.jpg",
                        "answers": answers.get(qid, [])})
    return records


def read_lavis(paths: list[str], split: str | None = None) -> list[dict[str, Any]]:
    """`ann_format: lavis`: LAVIS VQA lists ``[{"question_id", "question", "image",
    "answer": str|[str]}]``."""
    records = []
    for path in paths:
        for n, row in enumerate(load_records(path)):
            records.append({"question_id": row.get("question_id", f"{os.path.basename(path)}_{n}"),
                            "question": need(row, "question", path),
                            "image": media_field(row, "image", path, n),
                            "answers": _answers(row.get("answer", row.get("answers")))})
    return records


def read_aokvqa(paths: list[str], split: str | None = None) -> list[dict[str, Any]]:
    """`ann_format: aokvqa`, official A-OKVQA ``[{"question_id", "split", "image_id",
    "question", "choices", "correct_choice_idx", "direct_answers"}]``; image
    ``<split>2017/<image_id:012d>.jpg`` (or the record's "image")."""
    records = []
    for path in paths:
        for n, row in enumerate(load_json(path)):
            given = isinstance(row, dict) and row.get("image") not in (None, "")
            image = media_field(row, "image", path, n) if given else \
                f"{need(row, 'split', path)}2017/{int(need(row, 'image_id', path)):012d}.jpg"
            rec = {"question_id": need(row, "question_id", path), "question": need(row, "question", path),
                   "image": image,
                   "answers": _answers(row.get("direct_answers")),
                   "choices": [str(c) for c in row.get("choices", [])]}
            if row.get("correct_choice_idx") is not None:
                rec["correct_choice_idx"] = int(row["correct_choice_idx"])
            if row.get("difficult_direct_answer") is not None:
                rec["difficult_direct_answer"] = bool(row["difficult_direct_answer"])
            records.append(rec)
    return records


def read_ocrvqa(paths: list[str], split: str | None = None) -> list[dict[str, Any]]:
    """`ann_format: ocrvqa`, official OCR-VQA `dataset.json` ``{asin: {"imageURL",
    "questions", "answers", "split": 1 train|2 val|3 test}}``; image
    ``<asin><ext of imageURL>``."""
    if split is not None and split not in OCRVQA_SPLITS:
        raise DataError(f"OCR-VQA has splits {sorted(OCRVQA_SPLITS)}, not '{split}'.")
    records = []
    for path in paths:
        for asin, item in load_json(path).items():
            if split is not None and int(need(item, "split", path)) != OCRVQA_SPLITS[split]:
                continue
            ext = os.path.splitext(str(item.get("imageURL", "")))[1] or ".jpg"
            for j, (q, a) in enumerate(zip(need(item, "questions", path), need(item, "answers", path))):
                records.append({"question_id": f"{asin}_{j}", "question": q, "answers": [str(a)],
                                "image": f"{asin}{ext}", "ocr_key": asin})
    return records


def read_gqa(paths: list[str], split: str | None = None) -> list[dict[str, Any]]:
    """`ann_format: gqa`, official GQA ``{qid: {"imageId", "question", "answer"}}``; image
    ``<imageId>.jpg``."""
    records = []
    for path in paths:
        data = load_json(path)
        if isinstance(data, list):  # LAVIS's converted list form
            records.extend(read_lavis([path]))
            continue
        for qid, item in data.items():
            records.append({"question_id": qid, "question": need(item, "question", path),
                            "image": f"{need(item, 'imageId', path)}.jpg",
                            "answers": _answers(item.get("answer"))})
    return records


def read_textvqa(paths: list[str], split: str | None = None) -> list[dict[str, Any]]:
    """`ann_format: textvqa`, official TextVQA ``{"data": [{"question_id", "image_id",
    "question", "answers", optional "ocr_tokens"}]}``; image ``<image_id>.jpg``."""
    records = []
    for path in paths:
        for row in need(load_json(path), "data", path):
            image_id = str(need(row, "image_id", path))
            rec = {"question_id": need(row, "question_id", path), "question": need(row, "question", path),
                   "image": f"{image_id}.jpg", "answers": _answers(row.get("answers")),
                   "ocr_key": image_id}
            if "ocr_tokens" in row:
                rec["ocr_tokens"] = [str(t) for t in row["ocr_tokens"]]
            records.append(rec)
    return records


def read_vizwiz(paths: list[str], split: str | None = None) -> list[dict[str, Any]]:
    """`ann_format: vizwiz`, official VizWiz ``[{"image", "question", "answers":
    [{"answer"}]}]``; the question id is the image file's stem."""
    records = []
    for path in paths:
        for n, row in enumerate(load_json(path)):
            image = media_field(row, "image", path, n)
            records.append({"question_id": os.path.splitext(image)[0], "image": image,
                            "question": need(row, "question", path),
                            "answers": _answers(row.get("answers"))})
    return records


# Every reader returns a list of records::
#
#     {"question_id": str|int, "image": path relative to vis_root, "question": str,
#      "answers": [str, ...] (all human answers, duplicates kept; [] when unlabelled),
#      optional "ocr_key" (id in the OCR files), "choices", "correct_choice_idx", "context"}
READERS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "vqav2": read_vqav2, "lavis": read_lavis, "aokvqa": read_aokvqa, "ocrvqa": read_ocrvqa,
    "gqa": read_gqa, "textvqa": read_textvqa, "vizwiz": read_vizwiz,
}

"""Reading annotation files (JSON, JSON lines, CSV) with one clear error per bad file,
and the OCR-token files shared by the text-in-image datasets."""
from __future__ import annotations

import csv
import json
import os
from typing import Any, Iterable

from lavis_ib.common.errors import DataError


def _require(path: str) -> None:
    if not os.path.isfile(path):
        raise DataError(f"annotation file '{path}' does not exist; set its location under "
                        f"build_info.annotations in the dataset config.")


def load_json(path: str) -> Any:
    """The JSON document of an annotation file; `null` (an emptied file) is refused here,
    once for every reader, instead of as a TypeError where a reader first iterates it."""
    _require(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"annotation file '{path}' is not valid JSON: {exc}") from None
    if data is None:
        raise DataError(f"annotation file '{path}' holds null, not annotations; write its "
                        f"records (or point build_info.annotations at the right file).")
    return data


def load_records(path: str) -> list[Any]:
    """An annotation file that is a JSON list of records (LAVIS's layout)."""
    data = load_json(path)
    if not isinstance(data, list):
        raise DataError(f"annotation file '{path}' must hold a JSON list of records; got "
                        f"{type(data).__name__}.")
    return data


def load_jsonl(path: str) -> list[dict[str, Any]]:
    _require(path)
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"'{path}' line {n} is not valid JSON: {exc}") from None
    return rows


def load_csv(path: str) -> list[dict[str, str]]:
    _require(path)
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def need(record: dict[str, Any], key: str, path: str) -> Any:
    """`record[key]`, or a DataError naming the file and the missing field."""
    try:
        return record[key]
    except (KeyError, TypeError):
        raise DataError(f"'{path}': a record lacks the field '{key}' "
                        f"(record starts {str(record)[:120]}); is this the expected format?") from None


def text_field(record: Any, key: str, path: str, index: int, many: bool = False) -> Any:
    """`record[key]` checked to be a string (with `many`, a string or a list of strings).

    Raises:
        DataError: null, a number or another type, naming the file, the record (its
            position in the file) and the field; a caption of the wrong type would
            otherwise surface later as a TypeError in a worker process.
    """
    value = record.get(key) if isinstance(record, dict) else None
    ok = isinstance(value, str) or (many and isinstance(value, list)
                                    and all(isinstance(v, str) for v in value))
    if not ok:
        shown = "null" if value is None else f"{type(value).__name__} {value!r:.60}"
        kind = "a string or a list of strings" if many else "a string"
        raise DataError(f"'{path}' record {index}: field '{key}' must be {kind}; got {shown}. "
                        f"Fix the record or drop the field for an unlabelled sample.")
    return value


def media_field(record: Any, key: str, path: str, index: int | str) -> str:
    """`record[key]`, a media file's path (relative to the dataset's media folder), checked
    to be a non-empty string.

    Raises:
        DataError: a missing field, null, a number, a list or a mapping, naming the file,
            the record (its position in the file) and the field; such a value would
            otherwise surface as a TypeError when the dataset is built.
    """
    if not isinstance(record, dict) or key not in record:
        raise DataError(f"'{path}' record {index}: the field '{key}' (a media file path) is "
                        f"missing; is this the expected format?")
    value = record[key]
    if not isinstance(value, str) or not value.strip():
        shown = "null" if value is None else f"{type(value).__name__} {value!r:.60}"
        raise DataError(f"'{path}' record {index}: field '{key}' must be a file path (a non-empty "
                        f"string, relative to the media folder); got {shown}.")
    return value


def load_ocr_tokens(paths: Iterable[str]) -> dict[str, list[str]]:
    """{image_id: [OCR tokens]} from OCR files.

    Accepted layouts: TextVQA/TextCaps Rosetta files ``{"data": [{"image_id",
    "ocr_tokens"}, ...]}``, a list of such records, or a plain ``{image_id: [tokens]}``.
    """
    tokens: dict[str, list[str]] = {}
    for path in paths:
        data = load_json(path)
        rows = data.get("data", data) if isinstance(data, dict) else data
        if isinstance(rows, dict):
            for key, value in rows.items():
                tokens[str(key)] = [str(t) for t in value]
            continue
        for row in rows:
            if not isinstance(row, dict) or "image_id" not in row:
                continue  # Rosetta files start with a header record without an image
            tokens[str(row["image_id"])] = [str(t) for t in row.get("ocr_tokens", [])]
    return tokens

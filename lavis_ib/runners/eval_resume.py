"""Predictions of a long evaluation kept line by line, so a rerun skips what is done.

While a split is evaluated each rank appends its records to
`<out_dir>/predictions.partial.rank<r>.jsonl`, one whole line per record (one `write`
call, flushed). The file's first line is a header holding a fingerprint of what is
evaluated (the composed config and the checkpoint); a rerun with the same fingerprint
reads every rank's partial file and skips the batches whose sample ids are all done
(their records are reused), whatever the world size. A torn last line (a kill in the
middle of a write) is dropped and counted. When the split's predictions.jsonl and
metrics.json are written the partial files stay until the whole evaluation has ended
(`remove_partials` on its eval/ folder), so a rerun also skips the finished splits.
"""
from __future__ import annotations

import glob
import json
import logging
import os
from typing import Any, Iterable

import torch

logger = logging.getLogger(__name__)
PARTIAL = "predictions.partial.rank{rank}.jsonl"


def _json_default(obj: Any) -> Any:
    return obj.tolist() if isinstance(obj, torch.Tensor) else str(obj)


def read_done(out_dir: str | None, fingerprint: str | None) -> dict[Any, dict[str, Any]]:
    """{id: record} from the partial files of an earlier run with this fingerprint."""
    done: dict[Any, dict[str, Any]] = {}
    if not out_dir or not fingerprint:
        return done
    torn = 0
    for path in sorted(glob.glob(os.path.join(out_dir, PARTIAL.format(rank="*")))):
        with open(path) as f:
            lines = f.read().split("\n")
        try:
            header = json.loads(lines[0])
        except ValueError:
            header = {}
        if header.get("fingerprint") != fingerprint:
            logger.warning("%s is from another evaluation (config or checkpoint changed): "
                           "not reused", path)
            continue
        for line in lines[1:]:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                torn += 1
                continue
            done.setdefault(_key(record["id"]), record)
    if done or torn:
        logger.info("%s: reusing %d predictions of an interrupted evaluation (%d torn lines "
                    "dropped)", out_dir, len(done), torn)
    return done


def _key(value: Any) -> Any:
    return value if isinstance(value, (int, str)) else str(value)


def batch_ids(batch: dict[str, Any]) -> list[Any] | None:
    """The sample ids of a batch (`question_id` or `instance_id`), or None."""
    for key in ("question_id", "instance_id"):
        ids = batch.get(key)
        if ids is not None:
            ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
            return [_key(i) for i in ids]
    return None


def _header(path: str) -> str | None:
    try:
        with open(path) as f:
            return json.loads(f.readline()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(max(os.path.getsize(path) - 1, 0))
        return f.read(1) in (b"\n", b"")


class PartialWriter:
    """Appends this rank's records, line-whole; a no-op without a folder."""

    def __init__(self, out_dir: str | None, fingerprint: str | None, rank: int) -> None:
        self._file = None
        if out_dir and fingerprint:
            os.makedirs(out_dir, exist_ok=True)
            path = os.path.join(out_dir, PARTIAL.format(rank=rank))
            if _header(path) == fingerprint:
                self._file = open(path, "a")
                if not _ends_with_newline(path):  # a torn last line stays alone
                    self._file.write("\n")
            else:  # none yet, or another evaluation's
                self._file = open(path, "w")
                self._line({"fingerprint": fingerprint})

    def _line(self, obj: Any) -> None:
        self._file.write(json.dumps(obj, default=_json_default) + "\n")
        self._file.flush()

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        if self._file is not None:
            for record in records:
                self._line(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def remove_partials(out_root: str) -> None:
    """Remove the partial files of every split under an evaluation's eval/ folder."""
    for path in glob.glob(os.path.join(out_root, "*", PARTIAL.format(rank="*"))):
        os.remove(path)

"""Predictions of a long evaluation kept line by line, so a rerun skips what is done.

An evaluation of many hours killed near its end should not start again: each rank appends
its records as it goes (`PartialWriter`) and a rerun of the same config and checkpoint
reuses them (`read_done`), whatever the world size."""
from __future__ import annotations

import glob
import logging
import os
from typing import Any, Iterable

import torch

from lavis_ib.common.durable_files import JsonlAppender, JsonlContents, read_jsonl

logger = logging.getLogger(__name__)
PARTIAL = "predictions.partial.rank{rank}.jsonl"


def _json_default(obj: Any) -> Any:
    return obj.tolist() if isinstance(obj, torch.Tensor) else str(obj)


def read_done(out_dir: str | None, fingerprint: str | None) -> dict[Any, dict[str, Any]]:
    """{id: record} from the partial files of an earlier run with this fingerprint.

    Every rank's partial file is read, so the evaluation loop can skip the batches whose
    sample ids are all done (their records are reused), whatever the world size. A torn
    last line (a kill in the middle of a write) is dropped, counted, and cut off before the
    file is appended to.
    """
    done: dict[Any, dict[str, Any]] = {}
    if not out_dir or not fingerprint:
        return done
    torn = 0
    for path in sorted(glob.glob(os.path.join(out_dir, PARTIAL.format(rank="*")))):
        contents = read_jsonl(path)
        if _fingerprint(contents) != fingerprint:
            logger.warning("%s is from another evaluation (config or checkpoint changed): "
                           "not reused", path)
            continue
        torn += len(contents.bad) + (contents.torn is not None)
        for record in contents.records[1:]:
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


def _fingerprint(contents: JsonlContents) -> str | None:
    """The fingerprint in a partial file's header (its first line), if it has one."""
    if not contents.line_numbers or contents.line_numbers[0] != 1:
        return None
    header = contents.records[0]
    return header.get("fingerprint") if isinstance(header, dict) else None


class PartialWriter:
    """Appends this rank's records, line-whole; a no-op without a folder.

    The file is `<out_dir>/predictions.partial.rank<r>.jsonl` (the resumable JSONL of
    `common/durable_files.py`, as predict's results file); its first line is a header
    holding a fingerprint of what is evaluated (the composed config and the checkpoint).
    """

    def __init__(self, out_dir: str | None, fingerprint: str | None, rank: int) -> None:
        self._file = None
        if out_dir and fingerprint:
            os.makedirs(out_dir, exist_ok=True)
            path = os.path.join(out_dir, PARTIAL.format(rank=rank))
            contents = read_jsonl(path)
            if _fingerprint(contents) == fingerprint:   # continue it; a torn line is cut off
                self._file = JsonlAppender(path, keep=contents.size, default=_json_default)
            else:  # none yet, or another evaluation's
                self._file = JsonlAppender(path, keep=0, default=_json_default)
                self._file.write([{"fingerprint": fingerprint}])

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        if self._file is not None:
            self._file.write(records)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def remove_partials(out_root: str) -> None:
    """Remove the partial files of every split under an evaluation's eval/ folder.

    Called once the whole evaluation has ended, not when a split's predictions.jsonl and
    metrics.json are written, so a rerun also skips the finished splits.
    """
    for path in glob.glob(os.path.join(out_root, "*", PARTIAL.format(rank="*"))):
        os.remove(path)

"""Files a killed process cannot leave half-written: whole-file writes through a temporary
file and a rename (readers see the old file or the new one), and JSONL files appended one
whole line per record and read back up to their last whole line, so a run that stopped in
the middle of a write resumes after its last complete record. Evaluation resume, predict
results and the training log all use these, and nothing else writes such files.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable


def fsync_path(path: str) -> None:
    """Flush a file's or a folder's data and entry to disk (folders: POSIX only)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(path) else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. folders on platforms that cannot open them
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def write_synced(path: str, data: str | bytes) -> None:
    """Write `data` to a new file `path` and flush it to disk before returning (the step
    before a rename or a link makes the file visible under its real name)."""
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_atomic(path: str, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename: readers see the old
    file or the whole new one, never a part; a failed write removes the temporary file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        write_synced(tmp, text)
        os.replace(tmp, path)
    except BaseException:   # e.g. a full disk: no temporary file is left behind
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    fsync_path(os.path.dirname(os.path.abspath(path)))


def write_json_atomic(path: str, obj: Any, **kwargs: Any) -> None:
    """`obj` as indented JSON, written atomically (`json.dumps` keywords pass through)."""
    write_atomic(path, json.dumps(obj, indent=1, **kwargs))


@dataclass
class JsonlContents:
    """What a JSONL file holds up to its last whole line.

    Attributes:
        records: each whole line that parsed, in file order.
        line_numbers: the 1-based line number of each record.
        ends: the byte offset just after each record's line (truncating there keeps it).
        bad: (line number, why) of whole lines that are empty or not JSON.
        torn: the line number of an unterminated last line (a write cut short), or None.
        size: the byte offset after the last whole line: where appending continues.
    """

    records: list[Any] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    bad: list[tuple[int, str]] = field(default_factory=list)
    torn: int | None = None
    size: int = 0


def read_jsonl(path: str) -> JsonlContents:
    """The records of the JSONL file `path` (empty contents when it does not exist).

    Every record is written with its newline in one write, so only the last line can be
    torn; it is reported in `torn`, never parsed (a cut-off line may still be valid JSON).
    """
    out = JsonlContents()
    if not os.path.exists(path):
        return out
    with open(path, "rb") as f:
        data = f.read()
    offset = 0
    lines = data.split(b"\n")
    for number, line in enumerate(lines[:-1], start=1):   # each ends with a newline
        offset += len(line) + 1
        if not line.strip():
            out.bad.append((number, "an empty line"))
            continue
        try:
            record = json.loads(line)
        except ValueError:
            out.bad.append((number, "not JSON"))
            continue
        out.records.append(record)
        out.line_numbers.append(number)
        out.ends.append(offset)
    if lines[-1]:
        out.torn = len(lines)
    out.size = offset
    return out


def truncate(path: str, size: int) -> None:
    """Cut the file `path` (when it exists) to its first `size` bytes."""
    if os.path.exists(path) and os.path.getsize(path) != size:
        with open(path, "r+b") as f:
            f.truncate(size)


class JsonlAppender:
    """Appends records to a JSONL file, one whole line per record in one write, flushed.

    A write that fails part way (a full disk) is cut back to the file's previous end
    before the error is raised, so the file never keeps part of a batch.

    Args:
        path: the file (created when missing).
        keep: bytes of an existing file to keep (from `read_jsonl`: `size`, or an entry of
            `ends`); the rest (a torn line, records to compute again) is cut off first.
            None keeps the whole file.
        sync: fsync after each `write`, so a kill loses at most that call's records.
        default, ensure_ascii: passed to `json.dumps`.
    """

    def __init__(self, path: str, keep: int | None = None, sync: bool = False,
                 default: Callable[[Any], Any] | None = None, ensure_ascii: bool = True) -> None:
        if keep is not None:
            truncate(path, keep)
        self.path, self.sync = path, sync
        self._dumps = dict(default=default, ensure_ascii=ensure_ascii)
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, records: Iterable[Any]) -> None:
        text = "".join(json.dumps(r, **self._dumps) + "\n" for r in records)
        if not text:
            return
        data = text.encode("utf-8")
        end = os.fstat(self._fd).st_size
        try:
            written = 0
            while written < len(data):
                written += self._write_some(data[written:])
            if self.sync:
                os.fsync(self._fd)
        except OSError:
            try:
                os.ftruncate(self._fd, end)   # no part of these records stays
            except OSError:
                pass
            raise

    def _write_some(self, data: bytes) -> int:
        """One `os.write` (it may write fewer bytes than given)."""
        return os.write(self._fd, data)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def rewrite_jsonl(path: str, records: Iterable[Any]) -> None:
    """Replace the JSONL file `path` by `records` atomically (e.g. to drop some)."""
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in records))

"""The JSONL results file of `lavis-ib predict` and its resume.

A long prediction run can be killed and rerun without losing or mixing results: the file
knows its settings and continues where it stopped (`ResultsFile`, the resumable JSONL of
evaluation), and one run at a time writes it (`results_lock`)."""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Sequence

from lavis_ib.common.durable_files import (JsonlAppender, read_jsonl, truncate,
                                           write_json_atomic)
from lavis_ib.common.errors import ConfigError, DataError, LavisIbError
from lavis_ib.common.output_lock import OutputLock

log = logging.getLogger(__name__)
META_VERSION = 1


def meta_path(output: str) -> str:
    return output + ".meta.json"


def lock_path(output: str) -> str:
    return output + ".lock"


def results_lock(output: str) -> OutputLock:
    """The lock of one `--output` (`<output>.lock`), held while a run writes it, so a
    second `lavis-ib predict` into the same file is refused with one line naming the
    first (a lock left by a dead process is taken over, as for training runs)."""
    check_output_path(output)
    return OutputLock(lock_path(output), subject=f"--output '{output}'",
                      holder="lavis-ib predict", elsewhere="choose another --output")


def check_output_path(output: str) -> None:
    """`output` names a file in an existing folder, or one DataError line."""
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise DataError(f"--output '{output}': folder '{folder}' does not exist.")
    if os.path.isdir(output):
        raise DataError(f"--output '{output}' is a folder; give a file name.")


class ResultsWriteError(LavisIbError):
    """The results (or their settings file) could not be written, e.g. a full disk."""


class ResultsFile:
    """The results file of one run: `existing` records (resume), `keep`, `append`.

    One JSON object per input, in input order, appended and flushed batch by batch. Beside
    it, `<output>.meta.json` holds the settings that define the results (model, options,
    generation settings, append_eos, seed, batch size). A rerun with the same output keeps
    the records already written and continues after them; a rerun whose settings or inputs
    differ is refused (`overwrite` starts again), because one file would otherwise mix
    results of two setups. A torn last line (a crash in the middle of a write) is detected,
    logged and written again (the resumable JSONL of `common/durable_files.py`).
    """

    def __init__(self, output: str, settings: dict[str, Any], overwrite: bool = False) -> None:
        self.output, self.settings = output, settings
        self.existing: list[dict] = []
        self._ends: list[int] = []      # byte offset after each existing record
        self._keep = 0                  # bytes of the file kept (its whole lines) by `start`
        self._file: JsonlAppender | None = None
        self.written = 0                # records appended by this run
        check_output_path(output)
        if overwrite:
            for path in (output, meta_path(output)):
                if os.path.exists(path):
                    os.remove(path)
                    log.info("--overwrite: removed %s", path)
        if os.path.exists(output):
            self._check_meta()
            self._read_existing()

    def _check_meta(self) -> None:
        path = meta_path(self.output)
        if not os.path.isfile(path):
            raise ConfigError(f"--output '{self.output}' exists but has no '{path}', so it was "
                              f"not written by lavis-ib predict; pass --overwrite to replace it "
                              f"or choose another --output.")
        try:
            with open(path, encoding="utf-8") as fh:
                stored = json.load(fh).get("settings")
        except (json.JSONDecodeError, AttributeError, OSError) as exc:
            raise DataError(f"'{path}' is not a settings file ({exc}); pass --overwrite "
                            f"to start again.") from None
        if stored != self.settings:
            keys = sorted(k for k in set(stored or {}) | set(self.settings)
                          if (stored or {}).get(k) != self.settings.get(k))
            diffs = "; ".join(f"{k}: {(stored or {}).get(k)!r} then, {self.settings.get(k)!r} now"
                              for k in keys)
            raise ConfigError(f"--output '{self.output}' holds results of other settings "
                              f"({diffs}); rerun with the same settings to resume, pass "
                              f"--overwrite to start again, or choose another --output.")

    def _read_existing(self) -> None:
        contents = read_jsonl(self.output)
        problems = [(n, "an empty line" if why == "an empty line" else "not a result record")
                    for n, why in contents.bad]
        problems += [(n, "not a result record") for n, r in zip(contents.line_numbers,
                                                                 contents.records)
                     if not isinstance(r, dict) or "input" not in r]
        if problems:
            raise DataError(self._damaged(*min(problems)))
        if contents.torn is not None:   # written partly when the previous run stopped
            log.warning("%s: line %d is torn (the previous run stopped while writing it); it "
                        "is dropped and written again", self.output, contents.torn)
        self.existing = contents.records
        self._ends = contents.ends
        self._keep = contents.size

    def _damaged(self, number: int, what: str) -> str:
        return (f"--output '{self.output}' line {number} is {what}, so the file was edited or "
                f"damaged; pass --overwrite to start again or choose another --output.")

    def check_inputs(self, expected: Sequence[dict]) -> None:
        """The existing records must be for the first inputs of this run (same input,
        prompt and candidates), else the file belongs to another run."""
        if len(self.existing) > len(expected):
            raise ConfigError(f"--output '{self.output}' holds {len(self.existing)} records but "
                              f"this run has {len(expected)} inputs; pass --overwrite or choose "
                              f"another --output.")
        for number, (have, want) in enumerate(zip(self.existing, expected), start=1):
            mismatch = [k for k, v in want.items() if have.get(k) != v]
            if mismatch:
                raise ConfigError(
                    f"--output '{self.output}' line {number} is for {have.get('input')!r} "
                    f"({', '.join(mismatch)} differ from input {number} of this run, "
                    f"{want.get('input')!r}); the inputs changed, so pass --overwrite or "
                    f"choose another --output.")

    def keep(self, count: int) -> None:
        """Keep the first `count` records (a resume restarts at a batch boundary, so that
        a seeded batch is drawn exactly as in an uninterrupted run), drop the rest."""
        if count < len(self.existing):
            log.info("%s: %d record(s) of an unfinished batch are computed again",
                     self.output, len(self.existing) - count)
        self._keep = self._ends[count - 1] if count else 0
        self.existing = self.existing[:count]
        self._ends = self._ends[:count]
        truncate(self.output, self._keep)

    def start(self) -> None:
        """Write the settings file (atomically) before the first result."""
        try:
            write_json_atomic(meta_path(self.output), {"version": META_VERSION,
                                                       "settings": self.settings})
            self._file = JsonlAppender(self.output, keep=self._keep, sync=True,
                                       ensure_ascii=False)
        except OSError as exc:
            raise self._write_error(meta_path(self.output), exc) from None

    def append(self, records: Sequence[dict]) -> None:
        """One batch of records, flushed and synced, so a kill loses at most this batch;
        a failed write (a full disk) leaves the records before it, whole, and one line."""
        try:
            self._file.write(records)
        except OSError as exc:
            raise self._write_error(self.output, exc) from None
        self.written += len(records)

    def _write_error(self, path: str, exc: OSError) -> ResultsWriteError:
        kept = len(self.existing) + self.written
        return ResultsWriteError(
            f"could not write '{path}' ({type(exc).__name__}: [Errno {exc.errno}] "
            f"{exc.strerror or exc}); '{self.output}' keeps its first {kept} records, whole: "
            f"free space there, then rerun the same command to continue.")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

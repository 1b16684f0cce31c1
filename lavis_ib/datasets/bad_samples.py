"""Unreadable samples seen by a loader: counted, and each distinct file logged once with
its reason, so nothing is dropped silently and the `max_bad_sample_fraction` rule has the
counts it reads."""
from __future__ import annotations

import logging
from typing import Any, Mapping

logger = logging.getLogger(__name__)
_MAX_KEPT = 10_000      # distinct bad files remembered


class BadSampleLog:
    """Counts a loader's unreadable samples and logs each distinct file once.

    Datasets return `BadSample(path, reason)` for media they cannot read; the collater
    drops them and lists them in ``_bad_files``/``_bad_reasons``. `add(batch)` reads those
    lists and keeps the counts the `max_bad_sample_fraction` rule reads (`requested`,
    `bad`); every file not seen before gives one WARNING line (name, reason) and one
    event, drained by `pop_events()` for the run's ``log.jsonl``. The evaluation loop uses
    it the same way.
    """

    def __init__(self, where: str = "training") -> None:
        self.where = where
        self.requested = self.bad = 0
        self.files: dict[str, None] = {}
        self._events: list[dict[str, Any]] = []

    def add(self, batch: Mapping[str, Any], step: int | None = None, dataset: str | None = None) -> None:
        self.requested += int(batch.get("_num_requested", 0))
        paths = list(batch.get("_bad_files", ()))
        reasons = list(batch.get("_bad_reasons", ())) or ["unreadable"] * len(paths)
        for path, reason in zip(paths, reasons):
            self.bad += 1
            path = str(path)
            if path in self.files:
                continue
            if len(self.files) < _MAX_KEPT:
                self.files[path] = None
            logger.warning("skipped unreadable %s sample %s: %s (%d bad so far)",
                           self.where, path, reason, self.bad)
            self._events.append({"event": "bad_sample", "path": path, "reason": str(reason),
                                 "step": step, "dataset": dataset, "num_bad": self.bad})

    def pop_events(self) -> list[dict[str, Any]]:
        """The events of files first seen since the last call (for log.jsonl)."""
        events, self._events = self._events, []
        return events

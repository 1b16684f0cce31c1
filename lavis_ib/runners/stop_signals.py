"""Stopping a run cleanly when a cluster asks: SIGTERM / SIGUSR1 (what schedulers send before
a kill) set a flag; the runner agrees on it across ranks at the next step boundary,
checkpoints that step and ends normally, so `run.resume=auto` continues exactly.
"""
from __future__ import annotations

import signal
from typing import Any


class StopSignals:
    """SIGTERM and SIGUSR1 set `requested`; the previous handlers come back on `restore`.

    Installed only in the main thread (Python delivers signals there)."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None))
                    if s is not None)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._old: dict[int, Any] = {}

    def install(self) -> "StopSignals":
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

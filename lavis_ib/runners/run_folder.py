"""What keeps one training run per output folder and lets a cluster stop a run cleanly.

- `RunLock`: an exclusive lock file `<output_dir>/.lavis_ib.lock` (host, pid, start time)
  created with O_EXCL and held by rank 0 for the run's lifetime. A second run in the
  folder gets one line naming the holder; a lock left by a dead process on this host is
  taken over with a warning (a lock of another host is never guessed to be stale).
- `claim_output_dir`: a run that does not resume refuses a folder holding another run's
  checkpoints, unless `run.overwrite: true`, which moves the old contents aside to
  `<dir>.old-<timestamp>/` so two runs' files never mix.
- `check_config_change`: resuming with a changed global batch size, learning rate or
  dataset list is an error unless `run.allow_config_change: true`.
- `StopSignals`: SIGTERM / SIGUSR1 (what clusters send before a kill) set a flag; the
  runner agrees on it across ranks and checkpoints at the next step boundary.

Rank 0 decides about the folder; `rank0_decides` hands its error to every rank so all
of them stop with the same line instead of the others hanging in a collective.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import signal
import socket
import time
from typing import Any, Callable

from lavis_ib.common.dist_utils import all_gather_objects
from lavis_ib.common.errors import ConfigError, LavisIbError

logger = logging.getLogger(__name__)
LOCK_NAME = ".lavis_ib.lock"


def rank0_decides(rank: int, action: Callable[[], Any]) -> Any:
    """Run `action` on rank 0 and return its value on every rank; a `LavisIbError`
    there is raised on every rank."""
    outcome: tuple = (None, None)
    if rank == 0:
        try:
            outcome = (action(), None)
        except LavisIbError as exc:
            outcome = (None, (type(exc), str(exc)))
    value, error = all_gather_objects(outcome)[0]
    if error is not None:
        raise error[0](error[1])
    return value


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class RunLock:
    """The exclusive lock of a run folder (rank 0 only)."""

    def __init__(self, output_dir: str) -> None:
        self.path = os.path.join(output_dir, LOCK_NAME)
        self.held = False
        self.record = {"host": socket.gethostname(), "pid": os.getpid(),
                       "start": datetime.datetime.now().isoformat(timespec="seconds")}

    def acquire(self) -> None:
        """Take the lock, or take over a stale one; else raise one ConfigError line."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.record, f)
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return
        raise ConfigError(f"could not take the lock {self.path}; try again.")

    def _take_over_if_stale(self) -> None:
        try:
            with open(self.path) as f:
                holder = json.load(f)
        except (OSError, ValueError):
            holder = {}
        host, pid = holder.get("host"), holder.get("pid")
        if host == self.record["host"] and isinstance(pid, int) and _alive(pid):
            raise ConfigError(
                f"{os.path.dirname(self.path)} is in use by another run (pid {pid} on {host}, "
                f"started {holder.get('start')}); wait for it to finish or set another "
                f"run.output_dir.")
        if host not in (None, self.record["host"]):
            raise ConfigError(
                f"{os.path.dirname(self.path)} is in use by a run on host {host} (pid {pid}, "
                f"started {holder.get('start')}); if that run is gone, delete {self.path}.")
        logger.warning("taking over the stale lock %s (pid %s on %s is not running)",
                       self.path, pid, host)
        os.remove(self.path)

    def release(self) -> None:
        if not self.held:
            return
        try:
            with open(self.path) as f:
                still_ours = json.load(f).get("pid") == self.record["pid"]
            if still_ours:
                os.remove(self.path)
        except (OSError, ValueError):
            pass
        self.held = False


def _has_checkpoints(output_dir: str) -> bool:
    root = os.path.join(output_dir, "checkpoints")
    return os.path.isdir(root) and any(n.startswith("step_") or n == "best"
                                       for n in os.listdir(root))


def claim_output_dir(output_dir: str, overwrite: bool) -> str | None:
    """Make `output_dir` this new run's own (rank 0, lock held); returns the folder the
    old contents were moved to, if any.

    Raises:
        ConfigError: the folder holds another run's checkpoints and `overwrite` is off.
    """
    others = [n for n in os.listdir(output_dir) if n != LOCK_NAME] \
        if os.path.isdir(output_dir) else []
    if not others:
        return None
    if not overwrite:
        if _has_checkpoints(output_dir):
            raise ConfigError(
                f"{output_dir} holds another run's checkpoints; set run.resume=auto to "
                f"continue it, run.overwrite=true to move it aside, or another run.output_dir.")
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = f"{output_dir.rstrip(os.sep)}.old-{stamp}"
    n = 1
    while os.path.exists(aside):
        aside, n = f"{output_dir.rstrip(os.sep)}.old-{stamp}-{n}", n + 1
    os.makedirs(aside)
    for name in others:
        shutil.move(os.path.join(output_dir, name), os.path.join(aside, name))
    logger.warning("run.overwrite=true: moved the previous contents of %s to %s",
                   output_dir, aside)
    return aside


# settings a resumed run must keep: (meta key, run key)
RESUME_KEYS = (("global_batch_size", "run.global_batch_size"), ("init_lr", "run.init_lr"),
               ("datasets", "the dataset list"))


def check_config_change(path: str, saved: dict[str, Any], now: dict[str, Any],
                        allowed: bool) -> None:
    """Raise one ConfigError naming each resume setting that changed (unless allowed)."""
    changed = [f"{label} ({saved[key]} -> {now[key]})" for key, label in RESUME_KEYS
               if key in saved and saved[key] != now[key]]
    if not changed:
        return
    if allowed:
        logger.warning("resuming %s with changed %s (run.allow_config_change=true)",
                       path, ", ".join(changed))
        return
    raise ConfigError(f"resuming {path} with a changed {', '.join(changed)}; restore the "
                      f"checkpoint's values or set run.allow_config_change=true.")


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

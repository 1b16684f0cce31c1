"""One writer per output: a lock file naming its holder (host, pid, start time).

A training run locks its output folder and `lavis-ib predict` its `--output`, so a second
writer gets one line naming the first instead of mixing its records in; a dead process's
lock is taken over under an OS file lock, so exactly one of several contenders wins."""
from __future__ import annotations

import datetime
import errno
import json
import logging
import os
import socket
import time
from typing import Any, Callable

from lavis_ib.common.durable_files import write_synced
from lavis_ib.common.errors import ConfigError, LavisIbError

logger = logging.getLogger(__name__)
TAKEOVER_WAIT_S = 10.0    # how long a takeover waits for another one under way


class LockWriteError(LavisIbError):
    """The lock file could not be written (a full disk, a read-only folder)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _parsed(data: bytes) -> dict[str, Any]:
    try:
        holder = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


class OutputLock:
    """The exclusive lock file `path` of one output, held for a writer's lifetime.

    A new lock appears whole (its record is written beside it and hard-linked into place,
    which fails when a lock exists). A stale one (its pid not running on this host) is
    re-read and rewritten while holding `fcntl.flock` on it: a second process taking it
    over waits for the first, then reads the first one's live record and is refused. A
    lock of another host is never guessed to be stale.

    Args:
        path: the lock file.
        subject: how a refusal names the locked output, e.g. "/runs/a" or "--output 'r.jsonl'".
        holder: what holds such locks, e.g. "run" or "lavis-ib predict".
        elsewhere: the way out a refusal offers, e.g. "set another run.output_dir".
    """

    # a test hook: called with the stale holder's record after it is read, before it is
    # replaced (while the takeover holds the OS file lock)
    before_takeover: Callable[[dict[str, Any]], None] | None = None

    def __init__(self, path: str, subject: str, holder: str, elsewhere: str) -> None:
        self.path, self.subject, self.holder, self.elsewhere = path, subject, holder, elsewhere
        self.held = False
        self.record = {"host": socket.gethostname(), "pid": os.getpid(),
                       "start": datetime.datetime.now().isoformat(timespec="seconds")}

    # -- reading ------------------------------------------------------------------------
    def read_holder(self) -> dict[str, Any]:
        """The lock's record ({} when there is none or it is not a record)."""
        try:
            with open(self.path, "rb") as f:
                return _parsed(f.read())
        except OSError:
            return {}

    def problem_with(self, holder: dict[str, Any]) -> str | None:
        """Why the lock of `holder` belongs to another writer (a live process here, or
        any of another host), or None: it is stale."""
        host, pid = holder.get("host"), holder.get("pid")
        if host == self.record["host"] and isinstance(pid, int) and _alive(pid):
            return (f"{self.subject} is in use by another {self.holder} (pid {pid} on {host}, "
                    f"started {holder.get('start')}); wait for it to finish or "
                    f"{self.elsewhere}.")
        if host not in (None, self.record["host"]):
            return (f"{self.subject} is in use by a {self.holder} on host {host} (pid {pid}, "
                    f"started {holder.get('start')}); if it is gone, delete {self.path}.")
        return None

    def holder_problem(self) -> str | None:
        """Why another writer holds this lock, or None: no lock, or a stale one that
        `acquire` takes over."""
        if not os.path.exists(self.path):
            return None
        return self.problem_with(self.read_holder())

    # -- taking and giving back ---------------------------------------------------------
    def acquire(self) -> None:
        """Take the lock, or take over a stale one; else raise one ConfigError line."""
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        data = json.dumps(self.record).encode()
        for _ in range(3):
            try:
                taken = self._create(data) or self._take_over_if_stale(data)
            except OSError as exc:    # e.g. a full disk or a read-only folder
                raise LockWriteError(f"could not write the lock {self.path} "
                                     f"({type(exc).__name__}: {exc}).") from None
            if taken:
                self.held = True
                return
        raise ConfigError(f"could not take the lock {self.path} (other processes keep "
                          f"taking and releasing it); try again.")

    def _create(self, data: bytes) -> bool:
        """Make the lock file holding our record; False when a lock exists."""
        tmp = f"{self.path}.new-{os.getpid()}-{id(self)}"
        try:
            write_synced(tmp, data)
            os.link(tmp, self.path)   # fails when the lock exists: never a half-written lock
            return True
        except FileExistsError:
            return False
        except OSError as exc:        # a file system without hard links
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            return self._create_exclusive(data)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def _create_exclusive(self, data: bytes) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def _take_over_if_stale(self, data: bytes) -> bool:
        """Replace a stale lock's record by ours under `flock`; False when the lock went
        away meanwhile (released: try creating again). Raises the holder's refusal."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            deadline = time.monotonic() + TAKEOVER_WAIT_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ConfigError(f"could not take the lock {self.path}: another "
                                          f"process has been taking it over for "
                                          f"{TAKEOVER_WAIT_S:.0f} s; try again.") from None
                    time.sleep(0.02)
            try:
                if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                    return False     # released (and maybe made anew) while we waited
            except FileNotFoundError:
                return False
            holder = _parsed(os.pread(fd, 1 << 16, 0))
            problem = self.problem_with(holder)
            if problem:
                raise ConfigError(problem)
            if self.before_takeover is not None:
                self.before_takeover(holder)
            logger.warning("taking over the stale lock %s (pid %s on %s is not running)",
                           self.path, holder.get("pid"), holder.get("host"))
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
            return True
        finally:
            os.close(fd)             # also ends the flock

    def release(self) -> None:
        """Remove the lock if it still holds our record."""
        if not self.held:
            return
        holder = self.read_holder()
        if holder.get("pid") == self.record["pid"] and holder.get("host") == self.record["host"] \
                and holder.get("start") == self.record["start"]:
            try:
                os.remove(self.path)
            except OSError as exc:   # left behind: the next writer takes it over as stale
                logger.warning("could not remove the lock %s (%s); the next writer will "
                               "take it over as stale", self.path, exc)
        self.held = False

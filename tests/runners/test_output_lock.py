"""The lock of a run folder (and of predict's --output): taking over a stale lock is atomic.

Two contenders find the same stale lock (a dead pid of this host). The first is paused by
the takeover hook after reading it and before replacing it, which is where the old
remove-then-create takeover let a second contender in; the second must then wait and be
refused, never hold the lock too. No timing decides the outcome: the pause lasts until
the second contender has had ample time to finish if it could.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import threading

import pytest

from lavis_ib.common.errors import ConfigError
from lavis_ib.runners.run_folder import LOCK_NAME, RunLock


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def stale_lock(folder) -> str:
    path = os.path.join(folder, LOCK_NAME)
    with open(path, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": dead_pid(), "start": "then"}, f)
    return path


def test_two_contenders_for_one_stale_lock_one_wins(tmp_path, caplog):
    path = stale_lock(tmp_path)
    first, second = RunLock(str(tmp_path)), RunLock(str(tmp_path))
    paused, go_on, outcome = threading.Event(), threading.Event(), {}

    def pause(holder):          # after reading the stale lock, before taking it over
        assert holder["start"] == "then"
        paused.set()
        assert go_on.wait(30)

    first.before_takeover = pause

    def contend(name, lock):
        try:
            lock.acquire()
            outcome[name] = "held"
        except ConfigError as exc:
            outcome[name] = str(exc)

    a = threading.Thread(target=contend, args=("first", first))
    a.start()
    assert paused.wait(30)
    b = threading.Thread(target=contend, args=("second", second))
    b.start()
    b.join(1.0)                 # the old takeover finished here, holding the lock too
    assert "second" not in outcome, "the second contender got past a takeover under way"
    go_on.set()
    a.join(30)
    b.join(30)
    assert outcome["first"] == "held"
    assert outcome["second"].startswith(f"{tmp_path} is in use by another run (pid {os.getpid()}")
    assert first.held and not second.held
    with open(path) as f:
        assert json.load(f) == first.record
    assert caplog.text.count("taking over the stale lock") == 1
    first.release()
    assert os.listdir(tmp_path) == []   # released; no temporary file of the lock is left


def test_a_stale_lock_taken_over_and_released_and_a_live_one_refused(tmp_path, caplog):
    stale_lock(tmp_path)
    lock = RunLock(str(tmp_path))
    lock.acquire()
    assert "taking over the stale lock" in caplog.text
    with pytest.raises(ConfigError, match=f"pid {os.getpid()} on {socket.gethostname()}"):
        RunLock(str(tmp_path)).acquire()
    lock.release()
    again = RunLock(str(tmp_path))
    again.acquire()             # a fresh lock: created whole, not taken over
    assert caplog.text.count("taking over") == 1
    again.release()
    assert not os.path.exists(os.path.join(tmp_path, LOCK_NAME))


def test_a_lock_of_another_host_is_never_taken_over(tmp_path):
    path = os.path.join(tmp_path, LOCK_NAME)
    with open(path, "w") as f:
        json.dump({"host": "elsewhere", "pid": dead_pid(), "start": "then"}, f)
    with pytest.raises(ConfigError, match=f"run on host elsewhere.*delete {path}"):
        RunLock(str(tmp_path)).acquire()
    with open(path) as f:
        assert json.load(f)["host"] == "elsewhere"

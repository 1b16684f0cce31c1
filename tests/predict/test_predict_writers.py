"""One writer per `--output`, never an input as the output, and a full disk is one line.

Faults are injected, not provoked: a lock file naming a live or a dead process, a second
`main` started while the first holds the lock, and the results file's writer failing
with ENOSPC after writing part of a batch.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import subprocess

import pytest

from lavis_ib.cli.entry import run_entry
from lavis_ib.cli.predict import main
from lavis_ib.common.durable_files import JsonlAppender
from lavis_ib.common.errors import ConfigError
from lavis_ib.predict.output import ResultsFile, ResultsWriteError, lock_path, meta_path
from lavis_ib.predict.run import PROG
from tests.predict.conftest import write_png

MODEL = ["--model", "instructblip:tiny_vicuna"]
SETTINGS = {"model": "instructblip:tiny_vicuna", "seed": 0, "batch_size": 1}
ROWS = [{"input": f"{i}.png", "prompt": "p", "answer": str(i)} for i in range(3)]


def write_lock(output, pid):
    with open(lock_path(str(output)), "w") as f:
        json.dump({"host": socket.gethostname(), "pid": pid, "start": "then"}, f)


def dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def disk_full_at(monkeypatch, n):
    """The n-th low-level write of a results file writes half its bytes, then fails."""
    calls, original = [], JsonlAppender._write_some

    def write_some(self, data):
        calls.append(len(data))
        if len(calls) == n:
            original(self, data[:len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(self, data)

    monkeypatch.setattr(JsonlAppender, "_write_some", write_some)
    return calls


# -- D16: the output is never an input ---------------------------------------------------
def test_output_equal_to_an_input_is_refused_even_with_overwrite(tmp_path, pngs):
    labels = tmp_path / "labels.txt"
    labels.write_text("yes\nno\n")
    records = tmp_path / "in.jsonl"
    records.write_text(json.dumps({"image": pngs[0], "prompt": "x"}) + "\n")
    os.symlink(labels, tmp_path / "link.txt")
    os.link(records, tmp_path / "hard.jsonl")
    ranked = ["--image", pngs[0], "--prompt", "x", "--candidates", f"@{labels}"]
    cases = [(ranked, labels, labels), (ranked, tmp_path / "link.txt", labels),
             (["--input", str(records)], records, records),
             (["--input", str(records)], tmp_path / "hard.jsonl", records),
             (["--image", pngs[0], "--prompt", "x"], pngs[0], pngs[0])]
    before = sorted(os.listdir(tmp_path))
    for argv, output, destroyed in cases:
        with pytest.raises(ConfigError, match=f"--output '{output}' is the input"):
            main([*MODEL, *argv, "--output", str(output), "--overwrite"])
    assert labels.read_text() == "yes\nno\n"
    assert json.loads(records.read_text())["prompt"] == "x"
    assert sorted(os.listdir(tmp_path)) == before          # no .lock, no .meta.json


def test_an_input_named_like_the_outputs_settings_or_lock_file_is_refused(tmp_path, pngs):
    labels = tmp_path / "r.jsonl.meta.json"
    labels.write_text("yes\nno\n")
    with pytest.raises(ConfigError, match=r"is the input .* \(as '.*r.jsonl.meta.json'\)"):
        main([*MODEL, "--image", pngs[0], "--prompt", "x", "--candidates", f"@{labels}",
              "--output", str(tmp_path / "r.jsonl"), "--overwrite"])
    assert labels.read_text() == "yes\nno\n"


# -- D20: one writer per --output --------------------------------------------------------
def test_a_second_writer_is_refused_naming_the_first(tmp_path, pngs):
    output = tmp_path / "r.jsonl"
    output.write_text("")
    write_lock(output, os.getppid())
    with pytest.raises(ConfigError) as info:
        main([*MODEL, "--image", pngs[0], "--prompt", "x", "--output", str(output),
              "--overwrite"])
    assert str(info.value).startswith(
        f"--output '{output}' is in use by another lavis-ib predict (pid {os.getppid()} on "
        f"{socket.gethostname()}, started then); wait for it to finish or choose another "
        f"--output.")
    assert output.exists() and os.path.exists(lock_path(str(output)))   # both left alone


def test_the_lock_is_held_while_writing_and_released_at_exit(tmp_path, pngs, monkeypatch):
    """A second `main` into the same --output while the first runs is refused; the first
    gives its lock back when it ends."""
    import lavis_ib.cli.predict as cli

    output = str(tmp_path / "r.jsonl")
    argv = [*MODEL, "--image", pngs[0], "--prompt", "x", "--output", output]
    seen = []

    def while_running(*args):
        with open(lock_path(output)) as f:
            seen.append(json.load(f)["pid"])
        with pytest.raises(ConfigError, match=f"in use by another lavis-ib predict "
                                              f"\\(pid {os.getpid()}"):
            main(argv)
        return {"skipped": 0, "done": 0, "first_reason": None}

    monkeypatch.setattr(cli, "run_batches", while_running)
    assert main(argv) == 0
    assert seen == [os.getpid()]
    assert not os.path.exists(lock_path(output))


# -- D22: a full disk while appending ----------------------------------------------------
def test_a_failed_append_leaves_whole_records_and_one_error(tmp_path, monkeypatch):
    path = str(tmp_path / "r.jsonl")
    out = ResultsFile(path, SETTINGS)
    out.start()
    disk_full_at(monkeypatch, 2)
    out.append(ROWS[:1])
    with pytest.raises(ResultsWriteError) as info:
        out.append(ROWS[1:])
    out.close()
    assert str(info.value) == (
        f"could not write '{path}' (OSError: [Errno {errno.ENOSPC}] "
        f"{os.strerror(errno.ENOSPC)}); '{path}' keeps its first 1 records, whole: free "
        f"space there, then rerun the same command to continue.")
    with open(path) as f:
        assert f.read() == json.dumps(ROWS[0]) + "\n"      # the half-written batch cut off
    monkeypatch.undo()
    again = ResultsFile(path, SETTINGS)
    assert again.existing == ROWS[:1]


def test_a_failed_settings_write_is_one_error_and_leaves_no_temporary_file(tmp_path,
                                                                           monkeypatch):
    import builtins

    path = str(tmp_path / "r.jsonl")
    real_open = builtins.open

    def full(file, mode="r", *args, **kwargs):
        if ".tmp-" in str(file) and "w" in mode:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), file)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full)
    with pytest.raises(ResultsWriteError, match=f"could not write '{meta_path(path)}'"):
        ResultsFile(path, SETTINGS).start()
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_predict_on_a_full_disk_is_one_line_after_taking_over_a_stale_lock(tmp_path, capsys,
                                                                           caplog, monkeypatch):
    """The command over a stale lock; the second batch's write fails part way: exit 2,
    one line naming the file, the first record whole, the lock given back. (The batches
    are the records predict writes for ranked inputs; the model is not what is tested.)"""
    import lavis_ib.cli.predict as cli

    images = [write_png(tmp_path / f"{i}.png", i) for i in range(3)]
    output = str(tmp_path / "r.jsonl")
    write_lock(output, dead_pid())

    def batches(args, name, model_type, overrides, records, batches, generate, results):
        results.start()
        for window in batches:   # one batch each (--no-length-groups)
            results.append([{"input": records[i].path, "prompt": records[i].prompt,
                             "candidates": list(records[i].candidates),
                             "scores": {"yes": -1.0, "no": -2.0}, "answer": "yes"}
                            for i in range(window.start, window.stop)])
        return {"skipped": 0, "done": len(records), "first_reason": None}

    monkeypatch.setattr(cli, "run_batches", batches)
    calls = disk_full_at(monkeypatch, 2)
    argv = [*MODEL, "--image", *images, "--prompt", "Cat?", "--candidates", "yes,no",
            "--batch-size", "1", "--no-length-groups", "--no-progress", "--output", output]
    capsys.readouterr()
    assert run_entry(main, argv, PROG) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith(PROG)] == [
        f"{PROG}: error: could not write '{output}' (OSError: [Errno {errno.ENOSPC}] "
        f"{os.strerror(errno.ENOSPC)}); '{output}' keeps its first 1 records, whole: free "
        f"space there, then rerun the same command to continue."]
    assert len(calls) == 2
    assert "taking over the stale lock" in caplog.text
    with open(output) as f:
        lines = f.read().splitlines(keepends=True)
    assert len(lines) == 1 and json.loads(lines[0])["input"] == images[0]
    assert not os.path.exists(lock_path(output))

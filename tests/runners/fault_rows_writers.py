"""Fault-matrix rows of the writers: who may write into a run folder.

A second run into the folder of a run killed before its first checkpoint, `run.overwrite`
on a folder that is not a run's, a resume with a changed mixture, and evaluations aimed
at a training run's records (`--name ..`, a run killed before its first checkpoint whose
lock names a live process). Collected by test_fault_matrix.py (the `run` ctx: a copy of a
finished 6-step toy run).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess

from fault_helpers import STEPS, intact, train
from lavis_ib.cli.entry import run_entry

EVAL_PROG = "python -m lavis_ib.evaluate"


def _records(folder, names=("config.yaml", "run_info.json", "log.jsonl")):
    return {n: open(os.path.join(folder, n), "rb").read() for n in names
            if os.path.exists(os.path.join(folder, n))}


def _killed_before_first_checkpoint(ctx, pid):
    """The run folder as a run killed after step 1 leaves it: its records (config,
    run_info, the log of step 1, events), no checkpoint, its lock naming `pid`."""
    shutil.rmtree(os.path.join(ctx["out"], "checkpoints"))
    with open(os.path.join(ctx["out"], "log.jsonl"), "w") as f:
        f.write(json.dumps({"type": "train", "step": 1, "loss": 2.7}) + "\n")
    with open(os.path.join(ctx["out"], ".lavis_ib.lock"), "w") as f:
        json.dump({"host": socket.gethostname(), "pid": pid, "start": "then"}, f)


def _dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _evaluate(ctx, capsys, *argv):
    from lavis_ib.cli import evaluate

    capsys.readouterr()
    code = run_entry(evaluate.main, ["--cfg-path", ctx["path"], *argv], EVAL_PROG)
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.startswith(f"{EVAL_PROG}: error:")]


# -- rows ------------------------------------------------------------------------------
def row_second_run_after_a_run_killed_before_its_first_checkpoint(ctx, capsys, monkeypatch):
    """A12: no checkpoint yet, but the folder holds the killed run's records: a second
    `resume: none` run is refused (its stale lock does not make the folder free)."""
    _killed_before_first_checkpoint(ctx, _dead_pid())
    before = _records(ctx["out"])
    code, lines, _ = train(ctx, capsys, "run.resume=none")
    assert code == 2 and len(lines) == 1
    assert (f"{ctx['out']} holds another run's files (log.jsonl, config.yaml, run_info.json"
            in lines[0]) and "run.resume=auto" in lines[0] and "run.overwrite=true" in lines[0]
    assert _records(ctx["out"]) == before        # no line of a second run in log.jsonl


def row_overwrite_refuses_a_folder_that_is_not_a_run(ctx, capsys, monkeypatch):
    """A14: `run.overwrite=true` with `output_dir: .` in a folder of unrelated files is
    one line naming them; nothing is moved (no `..old-*` anywhere)."""
    work = os.path.join(ctx["tmp"], "work")
    os.makedirs(os.path.join(work, "src"))
    for name in ("notes.txt", os.path.join("src", "main.py")):
        with open(os.path.join(work, name), "w") as f:
            f.write("mine\n")
    monkeypatch.chdir(work)
    code, lines, _ = train(ctx, capsys, "run.resume=none", "run.overwrite=true",
                           "run.output_dir=.")
    assert code == 2 and len(lines) == 1
    assert "run.overwrite=true moves only a run folder aside, and . also holds notes.txt, " \
           "src, which no run writes" in lines[0]
    assert sorted(os.listdir(work)) == ["notes.txt", "src"]
    assert not [n for n in os.listdir(ctx["tmp"]) if ".old-" in n]
    intact(ctx, STEPS)


def row_resume_with_a_changed_sample_ratio(ctx, capsys, monkeypatch):
    """A9c: the mixture is a resume setting: refused with one line, accepted with
    `run.allow_config_change` and a warning naming the change."""
    code, lines, _ = train(ctx, capsys, "datasets.toy_b.sample_ratio=50")
    assert code == 2 and len(lines) == 1
    assert "datasets.toy_b.sample_ratio (2.0 -> 50.0)" in lines[0]
    assert "run.allow_config_change=true" in lines[0]
    intact(ctx, STEPS)
    code, lines, err = train(ctx, capsys, "datasets.toy_b.sample_ratio=50",
                             "run.allow_config_change=true")
    assert code == 0 and not lines
    assert "with changed datasets.toy_b.sample_ratio (2.0 -> 50.0)" in err, err[-3000:]


def row_evaluation_name_that_is_a_path(ctx, capsys, monkeypatch):
    """A8b: `--name ..` (or any path) is refused before anything is built; the finished
    run's records stay byte for byte."""
    before, evals = _records(ctx["out"]), sorted(os.listdir(os.path.join(ctx["out"], "eval")))
    for name in ("..", "../x", "a/b", "."):
        code, lines = _evaluate(ctx, capsys, "--name", name, "--options", "run.evaluate_only=true",
                                f"run.output_dir={ctx['out']}", "run.seed=9")
        assert code == 2 and len(lines) == 1
        assert f"evaluation name {name!r} must be a plain folder name" in lines[0]
    assert _records(ctx["out"]) == before
    assert sorted(os.listdir(os.path.join(ctx["out"], "eval"))) == evals   # validation's only
    intact(ctx, STEPS)


def row_evaluation_into_a_run_killed_before_its_first_checkpoint(ctx, capsys, monkeypatch):
    """A8c: the run folder has no checkpoint but its records and a lock naming a live
    process: the evaluation writes only under RUN/eval/<name>/."""
    _killed_before_first_checkpoint(ctx, os.getppid())
    before = _records(ctx["out"], names=("config.yaml", "run_info.json", "log.jsonl",
                                         ".lavis_ib.lock"))
    code, lines = _evaluate(ctx, capsys, "--name", "heldout", "--options", "run.evaluate_only=true",
                            f"run.output_dir={ctx['out']}", "run.seed=7")
    assert code == 0 and not lines
    assert _records(ctx["out"], names=tuple(before)) == before
    own = os.path.join(ctx["out"], "eval", "heldout")
    assert "seed: 7" in open(os.path.join(own, "config.yaml")).read()
    assert os.path.isfile(os.path.join(own, "eval", "toy_a_val", "metrics.json"))
    assert sorted(os.listdir(ctx["out"])) == sorted([*before, "eval", "tb"])
    assert sorted(os.listdir(os.path.join(ctx["out"], "eval"))) == \
        ["heldout", "step_00000003", "step_00000006"]

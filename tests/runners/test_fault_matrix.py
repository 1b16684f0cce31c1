"""The fault matrix of docs/reliability.md: one parametrised test, one row per fault.

Each row injects its fault into a toy run (a doctored, damaged or foreign checkpoint, a
second run, a full disk, a stop signal, an infinite gradient, a changed setting), checks
the single line or the behaviour the run promises, and that nothing was lost: earlier
checkpoints still verify, no marker file of a pickle payload appeared, and where the run
continues its losses equal an uninterrupted run's, bit for bit. The reference losses come
from that uninterrupted run of the same project (`base`), not from the faulted code path.
"""
from __future__ import annotations

import dataclasses
import glob
import importlib
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess

import pytest
import torch

from fault_helpers import (PROG, STEPS, Payload, _train, ckpt, events, intact, reseal,  # noqa: F401
                           train)
from runner_helpers import launch, losses, write_project
from lavis_ib.cli.entry import run_entry
from lavis_ib.runners.checkpointing.files import verify

@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """An uninterrupted 6-step run: the reference losses and checkpoints to fault."""
    folder = tmp_path_factory.mktemp("fault_base")
    path = write_project(folder, resume="auto")
    assert run_entry(_train, ["--cfg-path", path], PROG) == 0
    out = os.path.join(folder, "run")
    return {"out": out, "losses": losses(out)}



@pytest.fixture
def run(base, tmp_path):
    """A copy of the base run folder and its project (resume: auto)."""
    out = os.path.join(tmp_path, "run")
    shutil.copytree(base["out"], out)
    os.remove(os.path.join(out, "log.jsonl"))
    return {"path": write_project(tmp_path, resume="auto"), "out": out, "tmp": tmp_path,
            "marker": os.path.join(tmp_path, "MARKER"), "ref": base["losses"]}


# -- rows ------------------------------------------------------------------------------
def row_doctored_rank_pt(ctx, capsys, monkeypatch):
    torch.save({"rng": {}, "loader": Payload(ctx["marker"])}, os.path.join(ckpt(ctx, 6), "rank_0.pt"))
    reseal(ckpt(ctx, 6))
    code, lines, _ = train(ctx, capsys)   # resuming the finished run still reads it
    assert code == 2 and len(lines) == 1 and "refused to read" in lines[0] and "rank_0.pt" in lines[0]
    intact(ctx, STEPS)


def row_doctored_metadata(ctx, capsys, monkeypatch):
    from lavis_ib.runners.checkpointing.manager import load_trainable_weights
    from lavis_ib.runners.checkpointing.safe_load import UnsafeCheckpointError
    import runner_toys

    with open(os.path.join(ckpt(ctx, 6), "model", ".metadata"), "wb") as f:
        pickle.dump(Payload(ctx["marker"]), f)
    reseal(ckpt(ctx, 6))
    code, lines, _ = train(ctx, capsys)   # resuming the finished run still reads it
    assert code == 2 and len(lines) == 1 and "builtins.exec" in lines[0] and ".metadata" in lines[0]
    with pytest.raises(UnsafeCheckpointError, match="builtins.exec"):  # evaluate / export path
        load_trainable_weights(runner_toys.ToyIB(), ckpt(ctx, 6))
    intact(ctx, STEPS)


def row_doctored_distcp_bytes(ctx, capsys, monkeypatch):
    """Swap one byte entry of the optimizer's .distcp (a param_groups value) for a payload,
    with the index pointing at it (the index itself stays legitimate)."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    optim = os.path.join(ckpt(ctx, 6), "optim")
    md = FileSystemReader(optim).read_metadata()  # our own, trusted file
    fqn = next(k for k, v in md.state_dict_metadata.items() if isinstance(v, BytesStorageMetadata))
    key = next(k for k in md.storage_data if k.fqn == fqn)
    info = md.storage_data[key]
    shard = os.path.join(optim, info.relative_path)
    blob = pickle.dumps(Payload(ctx["marker"]), protocol=2)  # torch.save's protocol
    offset = os.path.getsize(shard)
    with open(shard, "ab") as f:
        f.write(blob)
    md.storage_data[key] = dataclasses.replace(info, offset=offset, length=len(blob))
    with open(os.path.join(optim, ".metadata"), "wb") as f:
        pickle.dump(md, f)
    reseal(ckpt(ctx, 6))
    code, lines, _ = train(ctx, capsys)   # resuming the finished run still reads it
    assert code == 2 and len(lines) == 1 and "byte entry" in lines[0] and "param_groups" in lines[0]
    intact(ctx, STEPS)


def row_inf_gradient_skipped(ctx, capsys, monkeypatch):
    """Forward call 3 (step 2's first micro-batch) gives an infinite gradient."""
    shutil.rmtree(ctx["out"])
    code, lines, _ = train(ctx, capsys, "model.inf_grad_calls=[3,3]")
    assert code == 0 and not lines
    skipped = events(ctx, "skipped_step")
    assert [e["step"] for e in skipped] == [2]
    intact(ctx, STEPS)
    import runner_toys
    from lavis_ib.runners.checkpointing.manager import load_trainable_weights

    model = runner_toys.ToyIB()
    load_trainable_weights(model, ckpt(ctx, 6))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def row_inf_gradient_too_often(ctx, capsys, monkeypatch):
    shutil.rmtree(ctx["out"])
    code, lines, _ = train(ctx, capsys, "model.inf_grad_calls=[5,999]", "run.max_skipped_steps=2")
    assert code == 2 and len(lines) == 1
    assert "not finite in 3 steps in a row" in lines[0] and "step_00000002" in lines[0]
    assert [e["in_a_row"] for e in events(ctx, "skipped_step")] == [1, 2, 3]
    assert [e["checkpoint"] for e in events(ctx, "non_finite_grad")] == [ckpt(ctx, 2)]
    intact(ctx, [2])


def row_inf_gradient_two_processes(ctx, capsys, monkeypatch):
    """ddp on 2 processes, the infinite gradient only on rank 0 (its step-2 micro-batch):
    both ranks skip step 2 together and the run completes with finite weights."""
    shutil.rmtree(ctx["out"])
    proc = launch(ctx["path"], ["model.inf_grad_calls=[2,2]", "model.inf_grad_rank=0",
                                "run.distributed=ddp"], nproc=2)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [e["step"] for e in events(ctx, "skipped_step")] == [2]
    assert sorted(losses(ctx["out"])) == [1, 2, 3, 4, 5, 6]
    intact(ctx, STEPS)
    import runner_toys
    from lavis_ib.runners.checkpointing.manager import load_trainable_weights

    model = runner_toys.ToyIB()
    load_trainable_weights(model, ckpt(ctx, 6))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def row_second_run_refused(ctx, capsys, monkeypatch):
    code, lines, _ = train(ctx, capsys, "run.resume=none")
    assert code == 2 and len(lines) == 1 and "holds another run's checkpoints" in lines[0]
    intact(ctx, STEPS)


def row_second_run_overwrite(ctx, capsys, monkeypatch):
    code, lines, _ = train(ctx, capsys, "run.resume=none", "run.overwrite=true", "run.max_iters=3")
    assert code == 0 and not lines
    aside = [n for n in os.listdir(ctx["tmp"]) if n.startswith("run.old-")]
    assert len(aside) == 1
    old = {**ctx, "out": os.path.join(ctx["tmp"], aside[0])}
    intact(old, STEPS)  # the old run, whole, beside the new one
    intact(ctx, [2, 3])
    assert sorted(losses(ctx["out"])) == [1, 2, 3]  # no old log lines mixed in


def row_lock_held(ctx, capsys, monkeypatch):
    lock = os.path.join(ctx["out"], ".lavis_ib.lock")
    with open(lock, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getppid(), "start": "now"}, f)
    code, lines, _ = train(ctx, capsys, "run.max_iters=8")
    assert code == 2 and len(lines) == 1 and f"pid {os.getppid()}" in lines[0]
    assert os.path.exists(lock)  # the other run's lock is left alone
    intact(ctx, STEPS)


def row_lock_stale(ctx, capsys, monkeypatch):
    dead = subprocess.Popen(["true"])
    dead.wait()
    with open(os.path.join(ctx["out"], ".lavis_ib.lock"), "w") as f:
        json.dump({"host": socket.gethostname(), "pid": dead.pid, "start": "then"}, f)
    code, lines, err = train(ctx, capsys, "run.max_iters=8", "run.allow_config_change=true")
    assert code == 0 and "taking over the stale lock" in err
    assert not os.path.exists(os.path.join(ctx["out"], ".lavis_ib.lock"))  # released
    intact(ctx, [2, 3, 4, 6, 8])


def row_damaged_newest_auto(ctx, capsys, monkeypatch):
    open(os.path.join(ckpt(ctx, 6), "trainer.json"), "w").close()  # 0 bytes
    shutil.rmtree(os.path.join(ckpt(ctx, 4), "optim"))  # and a missing folder in step 4
    code, lines, err = train(ctx, capsys)
    assert code == 0 and "skipping checkpoint" in err and "trainer.json has 0 bytes" in err
    assert [e["step"] for e in events(ctx, "resume")] == [3]
    got = losses(ctx["out"])
    assert {s: got[s] for s in (4, 5, 6)} == {s: ctx["ref"][s] for s in (4, 5, 6)}
    assert verify(ckpt(ctx, 6)) is None  # rewritten whole


def row_damaged_explicit_path(ctx, capsys, monkeypatch):
    shard = os.path.join(ckpt(ctx, 6), "model", "__0_0.distcp")
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)
    code, lines, _ = train(ctx, capsys, f"run.resume={ckpt(ctx, 6)}")
    assert code == 2 and len(lines) == 1 and "is damaged" in lines[0] and shard in lines[0]
    assert [verify(ckpt(ctx, s)) for s in (2, 3, 4)] == [None] * 3


def row_disk_full(ctx, capsys, monkeypatch):
    shutil.rmtree(ctx["out"])
    code, lines, _ = train(ctx, capsys, env={"LAVIS_IB_FAULT_DISK_FULL": "4"},
                           monkeypatch=monkeypatch)
    root = os.path.join(ctx["out"], "checkpoints")
    assert code == 2 and len(lines) == 1
    assert f"step-4 checkpoint in {root}" in lines[0] and "No space left" in lines[0]
    assert "earlier checkpoints are intact" in lines[0]
    intact(ctx, [2, 3])
    monkeypatch.delenv("LAVIS_IB_FAULT_DISK_FULL")
    assert train(ctx, capsys)[0] == 0  # resume auto: the run completes, losses exact
    assert losses(ctx["out"]) == ctx["ref"]


def row_sigusr1_in_process(ctx, capsys, monkeypatch):
    shutil.rmtree(ctx["out"])
    code, lines, _ = train(ctx, capsys, env={"LAVIS_IB_FAULT_SIGNAL_AFTER_STEP": "4:SIGUSR1"},
                           monkeypatch=monkeypatch)
    assert code == 0 and not lines
    assert [e["step"] for e in events(ctx, "stopped")] == [5]
    intact(ctx, [2, 3, 4, 5])
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # handler restored


def row_sigterm_process(ctx, capsys, monkeypatch):
    """A real process gets SIGTERM (self-sent after step 4): exit 0, checkpoint of step
    5, and resume: auto finishes with the uninterrupted run's losses."""
    shutil.rmtree(ctx["out"])
    proc = launch(ctx["path"], env={"LAVIS_IB_FAULT_SIGNAL_AFTER_STEP": "4"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    intact(ctx, [2, 3, 4, 5])
    assert train(ctx, capsys)[0] == 0
    assert losses(ctx["out"]) == ctx["ref"]
    assert [e["step"] for e in events(ctx, "resume")] == [5]


def row_sigterm_one_rank_of_two(ctx, capsys, monkeypatch):
    """ddp on 2 processes, SIGTERM reaches rank 1 only: both ranks checkpoint step 5
    (each its own rank file) and exit 0."""
    shutil.rmtree(ctx["out"])
    proc = launch(ctx["path"], ["run.distributed=ddp"], nproc=2,
                  env={"LAVIS_IB_FAULT_SIGNAL_AFTER_STEP": "4:SIGTERM@1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [e["step"] for e in events(ctx, "stopped")] == [5]
    intact(ctx, [2, 3, 4, 5])
    assert {"rank_0.pt", "rank_1.pt"} <= set(os.listdir(ckpt(ctx, 5)))


def row_changed_settings(ctx, capsys, monkeypatch):
    code, lines, _ = train(ctx, capsys, "run.max_iters=8", "run.init_lr=0.1",
                           "run.global_batch_size=4")
    assert code == 2 and len(lines) == 1
    assert "run.global_batch_size (8 -> 4)" in lines[0] and "run.init_lr (0.05 -> 0.1)" in lines[0]
    assert "run.max_iters (6 -> 8)" in lines[0]
    intact(ctx, STEPS)
    code, lines, _ = train(ctx, capsys, "run.max_iters=8", "run.init_lr=0.1",
                           "run.allow_config_change=true")
    assert code == 0 and not lines


def _evaluate(ctx, *options):
    from lavis_ib.cli import evaluate

    argv = ["--cfg-path", ctx["path"], "--checkpoint", ctx["out"], "--name", "heldout",
            "--options", "run.evaluate_only=true", *options]
    return run_entry(evaluate.main, argv, "python -m lavis_ib.evaluate")


def row_evaluation_into_training_run(ctx, capsys, monkeypatch):
    """An evaluation whose output_dir is a training run's folder writes only under
    RUN/eval/heldout/ (own config), leaving the run's records byte for byte."""
    records = {n: open(os.path.join(ctx["out"], n), "rb").read()
               for n in ("config.yaml", "run_info.json")}
    assert _evaluate(ctx, f"run.output_dir={ctx['out']}", "run.seed=7") == 0
    assert {n: open(os.path.join(ctx["out"], n), "rb").read() for n in records} == records
    own = os.path.join(ctx["out"], "eval", "heldout")
    assert "seed: 7" in open(os.path.join(own, "config.yaml")).read()
    for name in ("toy_a_val", "toy_b_val"):
        assert os.path.isfile(os.path.join(own, "eval", name, "metrics.json"))
    from lavis_ib.report.tables import evaluation_folder

    assert evaluation_folder(ctx["out"]) == own
    intact(ctx, STEPS)


def row_evaluation_killed_rerun(ctx, capsys, monkeypatch):
    """An evaluation that dies in its 6th batch keeps the 5 done batches line by line; the
    rerun evaluates only the rest and writes the same predictions as a clean run."""
    import runner_toys

    out = os.path.join(ctx["tmp"], "evalrun")
    clean = os.path.join(ctx["tmp"], "clean")
    assert _evaluate(ctx, f"run.output_dir={clean}") == 0
    original, calls = runner_toys.ToyClsTask.valid_step, []

    def counted(self, model, samples, fail_at=None):
        calls.append(1)
        if fail_at and len(calls) == fail_at:
            raise KeyboardInterrupt  # a kill (exit 130), after 5 whole batches
        return original(self, model, samples)

    monkeypatch.setattr(runner_toys.ToyClsTask, "valid_step",
                        lambda self, m, s: counted(self, m, s, fail_at=6))
    assert _evaluate(ctx, f"run.output_dir={out}") == 130
    partial = os.path.join(out, "eval", "toy_b_val", "predictions.partial.rank0.jsonl")
    assert len(open(partial).read().splitlines()) == 1 + 3  # header + toy_b's first batch
    calls.clear()
    monkeypatch.setattr(runner_toys.ToyClsTask, "valid_step",
                        lambda self, m, s: counted(self, m, s))
    assert _evaluate(ctx, f"run.output_dir={out}") == 0
    assert len(calls) == 2  # toy_a (10 samples, 4 batches) and toy_b's first (of 3) skipped
    for name in ("toy_a_val", "toy_b_val"):
        got, want = (open(os.path.join(d, "eval", name, "predictions.jsonl")).read()
                     for d in (out, clean))
        assert got == want
    assert not [p for p in os.listdir(os.path.join(out, "eval", "toy_b_val"))
                if "partial" in p]


def _rows(namespace):
    return {name[4:]: fn for name, fn in namespace.items() if name.startswith("row_")}


# Rows live here and in the `fault_rows_*.py` modules beside this file (one per area).
ROWS = _rows(dict(globals()))
for _path in sorted(glob.glob(os.path.join(os.path.dirname(__file__), "fault_rows_*.py"))):
    _module = importlib.import_module(os.path.basename(_path)[:-3])
    assert not set(_rows(vars(_module))) & set(ROWS), f"{_path} repeats a row name"
    ROWS.update(_rows(vars(_module)))


@pytest.mark.parametrize("row", sorted(ROWS))
@pytest.mark.integration
def test_fault_matrix(row, run, capsys, monkeypatch, toys):
    ROWS[row](run, capsys, monkeypatch)

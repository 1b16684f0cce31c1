"""Fault injection, exact resume and data/model parallelism, in subprocesses.

- `none`: a run killed after step 4 (LAVIS_IB_FAULT_AFTER_STEP) or while writing the
  step-4 checkpoint (LAVIS_IB_FAULT_IN_CHECKPOINT) continues with `resume: auto`, and its
  losses equal an uninterrupted run's bit for bit.
- `fsdp` and `ddp` on 2 processes (torchrun, gloo) match 1 process with the same global
  batch (1e-5); `fsdp` killed and resumed matches uninterrupted `fsdp` bit for bit.
"""
import json
import os

import pytest
import torch

from runner_helpers import launch, losses, write_project
from lavis_ib.common.config import Config
from lavis_ib.runners.checkpointing.manager import list_checkpoints, load_trainable_weights
from lavis_ib.runners.checkpointing.faults import FAULT_EXIT_CODE
from lavis_ib.runners.strategies import setup_distributed


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted single-process run (in this process)."""
    from lavis_ib.cli.session import build

    folder = tmp_path_factory.mktemp("reference")
    cfg = Config(write_project(folder), [])
    _, model, _, runner = build(cfg, setup_distributed(cfg.run_cfg))
    runner.train()
    out = cfg.run_cfg.output_dir
    return {"losses": losses(out), "model": model, "out": out}


def _ok(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]


def _val(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return {r["step"]: r["metrics"] for r in map(json.loads, f) if r["type"] == "val"}


def _final_weights(out, toys):
    model = toys.ToyIB()
    load_trainable_weights(model, out)
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.integration
def test_kill_after_step_then_resume_is_bit_exact(tmp_path, reference):
    path = write_project(tmp_path, resume="auto")
    out = os.path.join(tmp_path, "run")
    killed = launch(path, env={"LAVIS_IB_FAULT_AFTER_STEP": "4"})
    assert killed.returncode == FAULT_EXIT_CODE, killed.stderr[-3000:]
    assert sorted(losses(out)) == [1, 2, 3, 4]
    assert [s for s, _ in list_checkpoints(os.path.join(out, "checkpoints"))] == [2, 3, 4]
    _ok(launch(path))
    assert losses(out) == reference["losses"]  # bit for bit


@pytest.mark.integration
def test_kill_during_checkpoint_write_keeps_previous_checkpoint(tmp_path, reference, toys):
    path = write_project(tmp_path, resume="auto")
    out = os.path.join(tmp_path, "run")
    root = os.path.join(out, "checkpoints")
    killed = launch(path, env={"LAVIS_IB_FAULT_IN_CHECKPOINT": "4"})
    assert killed.returncode == FAULT_EXIT_CODE, killed.stderr[-3000:]
    assert ".tmp-step_00000004" in os.listdir(root)  # the half-written checkpoint
    assert list_checkpoints(root)[-1][0] == 3
    load_trainable_weights(toys.ToyIB(), out)  # the previous one loads
    # killed again between the step-6 checkpoint and its validation: the resumed run
    # validates step 6 before anything else
    killed = launch(path, env={"LAVIS_IB_FAULT_BEFORE_VALIDATION": "6"})
    assert killed.returncode == FAULT_EXIT_CODE, killed.stderr[-3000:]
    assert 6 not in _val(out)
    _ok(launch(path))
    assert losses(out) == reference["losses"]
    assert _val(out) == _val(reference["out"])
    assert not any(n.startswith(".tmp") for n in os.listdir(root))
    best = json.load(open(os.path.join(root, "best", "meta.json")))
    ref_best = json.load(open(os.path.join(reference["out"], "checkpoints", "best", "meta.json")))
    assert (best["step"], best["score"]) == (ref_best["step"], ref_best["score"])


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fsdp")
    # 2 micro-batches of 2 per rank (the mixing groups stay batch_size_train = 4, as in the
    # reference): gradient sync is skipped on the first
    path = write_project(folder, distributed="fsdp", activation_checkpointing=True,
                         resume="auto", batch_size_train=4, accum_grad_iters=2)
    proc = launch(path, nproc=2, timeout=150)
    _ok(proc)
    return {"path": path, "out": os.path.join(folder, "run")}


def test_fsdp_two_processes_match_one_process(fsdp_run, reference, toys):
    got, want = losses(fsdp_run["out"]), reference["losses"]
    assert sorted(got) == sorted(want)
    for step in want:
        assert got[step] == pytest.approx(want[step], abs=1e-5, rel=1e-5)
    for name, param in _final_weights(fsdp_run["out"], toys).items():
        torch.testing.assert_close(param, dict(reference["model"].named_parameters())[name],
                                   atol=1e-5, rtol=1e-5)
    assert _val(fsdp_run["out"]) == _val(reference["out"])  # sharded evaluation, same scores


@pytest.mark.integration
def test_fsdp_kill_and_resume_is_bit_exact(tmp_path, fsdp_run):
    path = write_project(tmp_path, distributed="fsdp", activation_checkpointing=True,
                         resume="auto", batch_size_train=4, accum_grad_iters=2)
    out = os.path.join(tmp_path, "run")
    killed = launch(path, nproc=2, timeout=150, env={"LAVIS_IB_FAULT_AFTER_STEP": "4"})
    assert killed.returncode != 0 and sorted(losses(out)) == [1, 2, 3, 4]
    _ok(launch(path, nproc=2, timeout=150))
    assert losses(out) == losses(fsdp_run["out"])  # bit for bit


@pytest.mark.integration
def test_ddp_two_processes_match_one_process(tmp_path, reference, toys):
    path = write_project(tmp_path, distributed="ddp", batch_size_train=4,
                         accum_grad_iters=2)  # no_sync + sync
    _ok(launch(path, nproc=2, timeout=150))
    out = os.path.join(tmp_path, "run")
    got, want = losses(out), reference["losses"]
    for step in want:
        assert got[step] == pytest.approx(want[step], abs=1e-5, rel=1e-5)
    for name, param in _final_weights(out, toys).items():
        torch.testing.assert_close(param, dict(reference["model"].named_parameters())[name],
                                   atol=1e-5, rtol=1e-5)
    assert _val(out) == _val(reference["out"])

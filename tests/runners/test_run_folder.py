"""The run folder: refusals before any model is built, a resume that changes the LR schedule
(refused, or continued from the LR at the resume step), and one log record per step after
a kill. References: an uninterrupted run of the same project, and the closed forms of the
schedules written out here.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import socket

import pytest

from fault_helpers import PROG, _train, ckpt, train
from runner_helpers import BASE_RUN, launch, losses, write_project
from lavis_ib.cli.entry import run_entry
from lavis_ib.runners.checkpointing.faults import FAULT_EXIT_CODE

INIT, MIN, WARMUP, STEPS = BASE_RUN["init_lr"], BASE_RUN["min_lr"], BASE_RUN["warmup_steps"], 6


def cosine(step, start, lr_start, end, floor=MIN):
    """The half cosine from `lr_start` at `start` to `floor` at `end` (0-based steps)."""
    return floor + (lr_start - floor) * (1 + math.cos(math.pi * (step - start) / (end - start))) / 2


def records(out, kind=None):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [r for r in map(json.loads, f) if kind is None or r["type"] == kind]


def lrs(out):
    return {r["step"]: r["lr"] for r in records(out, "train")}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An uninterrupted 6-step run (checkpoints 2, 3, 4, 6): the reference."""
    folder = tmp_path_factory.mktemp("finished")
    assert run_entry(_train, ["--cfg-path", write_project(folder)], PROG) == 0
    return os.path.join(folder, "run")


@pytest.fixture
def ctx(finished, tmp_path):
    """A copy of the finished run folder, its project resuming it (resume: auto)."""
    out = os.path.join(tmp_path, "run")
    shutil.copytree(finished, out)
    return {"path": write_project(tmp_path, resume="auto"), "out": out, "tmp": tmp_path}


@pytest.fixture
def no_model(toys, monkeypatch):
    """Fails the test's expectation if a model is built: the calls, recorded."""
    built = []

    def refuse(cls, cfg):
        built.append(cfg)
        raise RuntimeError("the model was built")

    monkeypatch.setattr(toys.ToyIB, "from_config", classmethod(refuse))
    return built


def _live_lock(ctx):
    with open(os.path.join(ctx["out"], ".lavis_ib.lock"), "w") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getppid(), "start": "now"}, f)
    return f"pid {os.getppid()}"


def _truncated_shard(ctx):
    shard = os.path.join(ckpt(ctx, 6), "model", "__0_0.distcp")
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)
    return [f"run.resume={ckpt(ctx, 6)}"], f"{shard} has"


REFUSALS = {
    "new_run_into_checkpoints": (None, ["run.resume=none"], "holds another run's checkpoints"),
    "live_lock": (_live_lock, ["run.max_iters=8"], None),   # the lock alone: no cascade
    "resume_path_without_checkpoint": (None, ["run.resume=/nonexistent/run"],
                                       "no complete checkpoint under '/nonexistent/run'"),
    "damaged_resume_path": (_truncated_shard, [], None),
    "global_batch_size": (None, ["run.global_batch_size=4"], "run.global_batch_size (8 -> 4)"),
    "init_lr": (None, ["run.init_lr=0.1"], "run.init_lr (0.05 -> 0.1)"),
    "max_iters": (None, ["run.max_iters=8"], "run.max_iters (6 -> 8)"),
    "warmup_steps": (None, ["run.warmup_steps=3"], "run.warmup_steps (2 -> 3)"),
    "warmup_lr": (None, ["run.warmup_lr=0.002"], "run.warmup_lr (0.001 -> 0.002)"),
    "min_lr": (None, ["run.min_lr=0.0"], "run.min_lr (0.001 -> 0.0)"),
    "lr_sched": (None, ["run.lr_sched=constant_lr"],
                 "run.lr_sched (linear_warmup_cosine_lr -> constant_lr)"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_come_before_any_model_is_built(case, ctx, capsys, no_model):
    prepare, options, expected = REFUSALS[case]
    extra = prepare(ctx) if prepare else None
    if isinstance(extra, tuple):
        options, expected = extra
    elif extra:
        expected = extra
    code, lines, _ = train(ctx, capsys, *options)
    assert code == 2 and len(lines) == 1 and expected in lines[0], lines
    assert no_model == []


def test_decay_settings_of_an_unused_schedule_are_not_compared(ctx, capsys, no_model):
    """lr_decay_every is read by the step schedule only: changing it under the cosine is
    no change of the run (the run then loads; the model builder is reached)."""
    with pytest.raises(RuntimeError, match="the model was built"):
        train(ctx, capsys, "run.lr_decay_every=7")
    assert no_model


def test_a_changed_dataset_list_is_found_by_the_preflight(ctx):
    from lavis_ib.common.schema import validate_run
    from lavis_ib.runners.run_folder import folder_problems

    run = validate_run({**BASE_RUN, "output_dir": ctx["out"], "resume": "auto"})
    annotated = {"toy_a": {"build_info": {"annotations": {"train": {}, "val": {}}}},
                 "toy_b": {"build_info": {"annotations": {"val": {}}}}}   # no train split now
    problems = folder_problems(run, annotated, world_size=1)
    assert len(problems) == 1
    assert "the dataset list (['toy_a', 'toy_b'] -> ['toy_a'])" in problems[0]
    both = {**annotated, "toy_b": {**annotated["toy_a"], "sample_ratio": 2.0}}   # as trained
    assert folder_problems(run, both, world_size=1) == []
    assert folder_problems(run, None, world_size=1) == []   # not composed: not compared


def test_a_global_batch_derived_from_an_unknown_world_is_not_compared(ctx):
    """Without run.global_batch_size the global batch is batch_size_train x world size x
    accumulation: `lavis-ib check` of a ddp project (no torchrun) cannot know it."""
    from lavis_ib.common.schema import validate_run
    from lavis_ib.runners.run_folder import folder_problems

    run = validate_run({**BASE_RUN, "output_dir": ctx["out"], "resume": "auto",
                        "global_batch_size": None, "accum_grad_iters": 1})
    assert folder_problems(run, None, world_size=None) == []
    assert folder_problems(run, None, world_size=2) == []          # 4 x 2 x 1 = 8, as saved
    (problem,) = folder_problems(run, None, world_size=1)
    assert "run.global_batch_size (8 -> 4)" in problem


@pytest.mark.integration
def test_extending_a_finished_run_continues_at_its_last_lr(ctx, capsys):
    """The issue's case: the cosine had reached min_lr at max_iters=6; a longer run goes on
    at min_lr (re-planning would jump to the cosine of an 8-step run at step 6)."""
    code, lines, err = train(ctx, capsys, "run.max_iters=8", "run.allow_config_change=true")
    assert code == 0 and not lines
    got = lrs(ctx["out"])
    replanned = cosine(6, WARMUP, INIT, 8)
    assert got[7] == got[8] == MIN and replanned > 10 * MIN
    assert "the LR continues from 0.001 at step 6 to 0.001 at step 8" in err
    resume = [r for r in records(ctx["out"], "event") if r["event"] == "resume"]
    assert resume[-1]["schedule_continued_from"] == {"step": 6, "lr": MIN}


@pytest.mark.integration
def test_an_accepted_extension_continues_the_cosine_without_warmup(finished, tmp_path, capsys):
    """Resumed at step 4 of 6 with max_iters=10: continuous at the resume step, then a cosine
    down to min_lr at step 10, no second warm-up; a later resume keeps the continuation."""
    ext = {"path": write_project(tmp_path / "ext", resume=os.path.join(
        finished, "checkpoints", "step_00000004"), max_iters=10, allow_config_change=True),
        "out": str(tmp_path / "ext" / "run")}
    code, lines, err = train(ext, capsys)
    assert code == 0 and not lines
    start_lr = cosine(4, WARMUP, INIT, STEPS)              # the 6-step plan at step 4
    want = {s + 1: cosine(s, 4, start_lr, 10) for s in range(4, 10)}   # logged 1-based
    got = lrs(ext["out"])
    assert sorted(got) == [5, 6, 7, 8, 9, 10]
    assert all(abs(got[s] - want[s]) < 1e-12 for s in got), (got, want)
    assert got[5] == lrs(finished)[5]                      # continuous at the resume step
    assert all(got[s + 1] < got[s] for s in range(5, 10))  # no warm-up: decreasing
    assert cosine(10, 4, start_lr, 10) == MIN
    assert "run.max_iters (6 -> 10)" in err and f"the LR continues from {start_lr:.3g}" in err
    # the continuation lives in the scheduler state: the step-10 checkpoint ends at min_lr
    from lavis_ib.runners.schedulers import LinearWarmupCosineLRScheduler

    with open(os.path.join(ckpt(ext, 10), "trainer.json")) as f:
        state = json.load(f)["scheduler"]
    assert state["continued_from"] == [4, pytest.approx(start_lr, abs=0)]
    sched = LinearWarmupCosineLRScheduler(None, 10, INIT, MIN, BASE_RUN["warmup_lr"], WARMUP)
    sched.restore(state)
    assert sched.lr_at(10) == MIN
    # resumed again at step 8 with the extended settings: the same LRs, no refusal
    again = {"path": write_project(tmp_path / "again", resume="auto", max_iters=10),
             "out": str(tmp_path / "again" / "run")}
    shutil.copytree(ext["out"], again["out"])
    shutil.rmtree(ckpt(again, 10))
    code, lines, _ = train(again, capsys)
    assert code == 0 and not lines
    assert lrs(again["out"]) == got and losses(again["out"]) == losses(ext["out"])


@pytest.mark.integration
def test_kill_and_resume_leave_one_record_per_step(finished, tmp_path, capsys):
    """Killed after step 5 (its newest checkpoint is step 4), then resumed: log.jsonl and
    TensorBoard hold each step once, with the uninterrupted run's values."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = {"path": write_project(tmp_path, resume="auto"), "out": str(tmp_path / "run")}
    killed = launch(run["path"], env={"LAVIS_IB_FAULT_AFTER_STEP": "5"})
    assert killed.returncode == FAULT_EXIT_CODE, killed.stderr[-3000:]
    assert [r["step"] for r in records(run["out"], "train")] == [1, 2, 3, 4, 5]
    code, lines, _ = train(run, capsys)
    assert code == 0 and not lines
    log = records(run["out"])
    assert [r["step"] for r in log if r["type"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in log if r["type"] == "val"] == [3, 6]
    events = [(r["event"], r["step"]) for r in log if r["type"] == "event"]
    assert [s for e, s in events if e == "checkpoint"] == [2, 3, 4, 6]
    assert ("log_truncated", 4) in events and ("resume", 4) in events
    assert losses(run["out"]) == losses(finished)
    tb = EventAccumulator(os.path.join(run["out"], "tb"))
    tb.Reload()
    for tag in ("train/loss", "train/lr"):
        assert [e.step for e in tb.Scalars(tag)] == [1, 2, 3, 4, 5, 6], tag
    assert [e.step for e in tb.Scalars("val/select_score")] == [3, 6]
    tb_loss = {e.step: e.value for e in tb.Scalars("train/loss")}
    assert all(abs(tb_loss[s] - v) < 1e-6 for s, v in losses(finished).items())


def test_a_revalidated_checkpoint_drops_its_earlier_validation_records(tmp_path):
    """A process killed during the validation of its step-4 checkpoint may have logged it;
    the resumed process validates again, so those records go (and a torn line)."""
    from lavis_ib.runners.run_log import RunLogger

    path = tmp_path / "log.jsonl"
    lines = [{"type": "event", "event": "wandb", "mode": "offline"},
             *({"type": "train", "step": s, "lr": 0.1} for s in (1, 2, 3, 4)),
             {"type": "event", "event": "checkpoint", "step": 4},
             {"type": "val", "step": 4, "score": 0.5},
             {"type": "event", "event": "best", "step": 4, "score": 0.5},
             {"type": "train", "step": 5, "lr": 0.1}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"type": "tr')
    log = RunLogger(str(tmp_path), 10, start_step=4, loggers=[], revalidate=True)
    log.close()
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert kept[:-1] == lines[:6]
    assert {k: kept[-1][k] for k in ("event", "step", "dropped", "damaged_lines")} == {
        "event": "log_truncated", "step": 4, "dropped": 3, "damaged_lines": 1}

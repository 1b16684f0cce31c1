"""BLIP-2 stage 1 through the runner on the coco_caption fixture (several captions per
image): the tiny type trains, log.jsonl holds `loss_itc`, `loss_itm`, `loss_lm` beside
`loss` (their sum); a run killed after step 2 and resumed logs the same numbers bit for
bit (ITM's negative draws included); FSDP on two processes logs the losses of one
process with the same global batch.
"""
from __future__ import annotations

import json
import os

import pytest
import yaml

from lavis_ib.runners.checkpointing.faults import FAULT_EXIT_CODE
from tests.runners.runner_helpers import launch

PARTS = ("loss", "loss_itc", "loss_itm", "loss_lm")


def write_project(folder: str, data: str, **run) -> str:
    project = {
        "model": {"arch": "blip2", "model_type": "tiny",
                  "qformer": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}},
        "datasets": {"coco_caption": {
            "cache_root": data,
            "task": None,   # no evaluation: the stage-1 model does not caption
            "build_info": {"annotations": {split: {"storage": f"coco_caption/annotations/coco_karpathy_{split}.json"}
                                           for split in ("train", "val", "test")},
                           "images": {"storage": "coco_caption/images"}},
            "vis_processor": {"train": {"name": "blip2_image_train", "image_size": 32},
                              "eval": {"name": "blip_image_eval", "image_size": 32}}}},
        "run": {"task": "instruction_tuning", "runner": "runner_iter", "max_iters": 4,
                "val_every": 0, "save_every": 2, "keep_last": 3, "global_batch_size": 4,
                "batch_size_train": 4, "lr_sched": "linear_warmup_cosine_lr", "init_lr": 1e-3,
                "min_lr": 0.0, "warmup_lr": 1e-5, "warmup_steps": 1, "weight_decay": 0.05,
                "amp": "none", "distributed": "none", "device": "cpu", "num_workers": 0,
                "seed": 42, "log_every": 1, "resume": "auto", "train_splits": ["train"],
                "output_dir": os.path.join(folder, "run"), **run},
    }
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "project.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(project, f)
    return path


def records(run_dir: str) -> dict[int, dict]:
    """{step: the step's last train record} of log.jsonl."""
    out = {}
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            if record["type"] == "train":
                out[record["step"]] = {k: record[k] for k in PARTS}
    return out


def _ok(proc) -> None:
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.fixture(scope="module")
def data(fixture_root):
    return fixture_root.path


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("stage1_ref"))
    _ok(launch(write_project(folder, data), timeout=300))
    return records(os.path.join(folder, "run"))


@pytest.mark.integration
def test_stage1_trains_and_logs_its_three_losses(reference):
    assert sorted(reference) == [1, 2, 3, 4]
    for step, r in reference.items():
        assert r["loss"] == pytest.approx(r["loss_itc"] + r["loss_itm"] + r["loss_lm"], rel=1e-6)
        assert all(r[k] > 0 for k in PARTS), (step, r)
    assert reference[4]["loss_lm"] < reference[1]["loss_lm"]


@pytest.mark.integration
def test_kill_after_step_2_then_resume_is_bit_exact(data, reference, tmp_path):
    path = write_project(str(tmp_path), data)
    killed = launch(path, env={"LAVIS_IB_FAULT_AFTER_STEP": "2"}, timeout=300)
    assert killed.returncode == FAULT_EXIT_CODE, killed.stderr[-3000:]
    assert sorted(records(str(tmp_path / "run"))) == [1, 2]
    _ok(launch(path, timeout=300))
    assert records(str(tmp_path / "run")) == reference


@pytest.mark.integration
def test_fsdp_on_two_processes_logs_the_losses_of_one(data, reference, tmp_path):
    path = write_project(str(tmp_path), data, distributed="fsdp")
    _ok(launch(path, nproc=2, timeout=400))
    got = records(str(tmp_path / "run"))
    assert sorted(got) == sorted(reference)
    for step, want in reference.items():
        assert got[step] == pytest.approx(want, abs=1e-5, rel=1e-5), step

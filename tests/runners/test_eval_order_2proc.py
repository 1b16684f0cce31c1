"""Grouped evaluation batches across processes: a 2-process torchrun (ddp, gloo) with
batches grouped by prompt length writes the predictions and metrics of one process in
dataset order, for a generating split of mixed question lengths and a ranking one (VisDial,
whose dialog histories grow round by round)."""
from __future__ import annotations

import os

import pytest
import yaml

from runner_helpers import launch
from test_eval_order import write_mixed_gqa


@pytest.mark.integration
def test_two_grouped_processes_equal_one_in_dataset_order(tmp_path, fixture_root):
    visdial = dict(fixture_root.overrides["visdial"],
                   vis_processor={"eval": {"name": "blip_image_eval", "image_size": 32}})
    cfg = tmp_path / "project.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"arch": "instructblip", "model_type": "tiny_vicuna"},
        "datasets": {"gqa": write_mixed_gqa(tmp_path, fixture_root), "visdial": visdial},
        "run": {"task": "instruction_tuning", "evaluate_only": True, "batch_size_eval": 3,
                "num_workers": 0, "amp": "none", "distributed": "none", "device": "cpu",
                "seed": 0, "dist_timeout_s": 120}}))
    runs = {"one": ([f"run.output_dir={tmp_path / 'one'}", "+datasets.gqa.length_grouped=false",
                     "+datasets.visdial.length_grouped=false"], 1),
            "two": ([f"run.output_dir={tmp_path / 'two'}", "run.distributed=ddp"], 2)}
    for name, (options, nproc) in runs.items():
        proc = launch(str(cfg), options, nproc=nproc, module="lavis_ib.cli.evaluate",
                      timeout=240)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert ("grouped by prompt length" in proc.stderr) == (nproc == 2), proc.stderr[-4000:]
    for split in ("gqa_test", "visdial_val"):
        for name in ("predictions.jsonl", "metrics.json"):
            one, two = (open(os.path.join(tmp_path, run, "eval", split, name)).read()
                        for run in ("one", "two"))
            assert one == two, (split, name)
            assert name != "predictions.jsonl" or one.count("\n") > 10, split

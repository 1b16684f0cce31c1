"""Grouped evaluation batches across processes: a 2-process torchrun (ddp, gloo) with
batches grouped by prompt length writes the predictions and metrics that one process
writes in dataset order, for a generating split of mixed question lengths and a ranking
one (VisDial, whose dialog histories grow round by round)."""
from __future__ import annotations

import json
import os

import pytest
import torch
import yaml

from runner_helpers import launch
from test_eval_order import write_mixed_gqa

SPLITS = {"gqa": "test", "visdial": "val"}


@pytest.mark.integration
def test_two_grouped_processes_equal_one_in_dataset_order(tmp_path, fixture_root, tiny_vicuna):
    from lavis_ib import registry
    from lavis_ib.common.config import Config
    from lavis_ib.runners.eval_loop import evaluate_split

    visdial = dict(fixture_root.overrides["visdial"],
                   vis_processor={"eval": {"name": "blip_image_eval", "image_size": 32}})
    cfg = tmp_path / "project.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"arch": "instructblip", "model_type": "tiny_vicuna"},
        "datasets": {"gqa": write_mixed_gqa(tmp_path, fixture_root), "visdial": visdial},
        "run": {"task": "instruction_tuning", "evaluate_only": True, "batch_size_eval": 3,
                "num_workers": 0, "amp": "none", "distributed": "ddp", "device": "cpu",
                "seed": 0, "dist_timeout_s": 120}}))
    proc = launch(str(cfg), [f"run.output_dir={tmp_path / 'two'}"], nproc=2,
                  module="lavis_ib.cli.evaluate", timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "grouped by prompt length" in proc.stderr, proc.stderr[-4000:]
    datasets = Config(str(cfg)).datasets_cfg
    for name, split in SPLITS.items():     # the reference: one process, dataset order
        entry = datasets[name]
        data = registry.get_builder_class(name)(entry).build_datasets()[split]
        task = registry.get_task_class(entry.task).for_dataset(name, entry)
        want = evaluate_split(tiny_vicuna, task, data, name, split, batch_size=3,
                              num_workers=0, device=torch.device("cpu"),
                              out_dir=str(tmp_path / "one" / f"{name}_{split}"),
                              length_grouped=False)
        folder = os.path.join(tmp_path, "two", "eval", f"{name}_{split}")
        assert json.load(open(os.path.join(folder, "metrics.json"))) == want
        one, two = (open(os.path.join(d, "predictions.jsonl")).read()
                    for d in (tmp_path / "one" / f"{name}_{split}", folder))
        assert one == two and one.count("\n") == len(data) > 10, name

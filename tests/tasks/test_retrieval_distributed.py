"""Retrieval in 2 processes (torchrun, gloo) gives the records and metrics of 1 process;
each pair is scored once over the ranks and each rank extracts only its share of the
images."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORKER = r'''
import json, os, sys
import torch
import torch.distributed as dist
from lavis_ib import registry
from lavis_ib.common.config import compose_dataset
from lavis_ib.runners.eval_loop import evaluate_split
from tests.datasets.conftest import build
from tests.tasks.retrieval_reference import FakeRetrievalModel

fixtures, out = json.loads(sys.argv[1]), sys.argv[2]
if "WORLD_SIZE" in os.environ:
    dist.init_process_group("gloo")
rank = dist.get_rank() if dist.is_initialized() else 0
result = {}
for name, which in (("coco_retrieval", "test"), ("flickr30k_retrieval", "val")):
    dataset = build(name, fixtures[name])[which]
    task = registry.get_task_class("retrieval").for_dataset(
        name, compose_dataset(name, {"k_test": 3, "feature_workers": 0, "feature_batch_size": 1}))
    model = FakeRetrievalModel()
    seen = []
    features = model.retrieval_image_features
    model.retrieval_image_features = lambda images: (seen.append(len(images)), features(images))[1]
    folder = os.path.join(out, f"{name}_{which}")
    metrics = evaluate_split(model, task, dataset, name, which, batch_size=2, num_workers=0,
                             device=torch.device("cpu"), out_dir=folder)
    result[name] = {"metrics": metrics, "itm_pairs": model.itm_pairs, "images": sum(seen),
                    "size": [len(dataset), len(dataset.text)]}
with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
    json.dump(result, f)
if dist.is_initialized():
    dist.barrier()   # both ranks done before gloo tears down (a rank leaving first aborted once)
    dist.destroy_process_group()
'''


def launch(tmp_path, fixtures, out, nproc):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cmd = [sys.executable] + (["-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                               str(nproc)] if nproc > 1 else []) + [str(script), json.dumps(fixtures), str(out)]
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1", "LAVIS_IB_NO_PROGRESS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]
    records = {}
    for name, which in (("coco_retrieval", "test"), ("flickr30k_retrieval", "val")):
        with open(out / f"{name}_{which}" / "predictions.jsonl") as f:
            records[name] = [json.loads(line) for line in f]
    return ranks, records


@pytest.mark.integration
def test_two_processes_equal_one(tmp_path, fixture_root):
    fixtures = {n: fixture_root.overrides[n] for n in ("coco_retrieval", "flickr30k_retrieval")}
    (one,), records_one = launch(tmp_path, fixtures, tmp_path / "one", 1)
    two, records_two = launch(tmp_path, fixtures, tmp_path / "two", 2)
    assert records_one == records_two
    for name in one:
        n, m = one[name]["size"]
        assert two[0][name]["metrics"] == two[1][name]["metrics"] == one[name]["metrics"]
        # each pair scored once: image->text rows on the image's rank, text->image pairs
        # on the rank holding the pair's image
        assert one[name]["itm_pairs"] == sum(r[name]["itm_pairs"] for r in two) == n * 3 + m * 3
        assert [r[name]["images"] for r in two] == [n // 2, n - n // 2]

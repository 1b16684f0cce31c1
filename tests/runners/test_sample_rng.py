"""Per-sample seeding (docs/reliability.md, "exact resume with the default workers").

The toy training sets here are read through `BaseDataset` and augmented with noise drawn
from torch's global RNG, as torchvision transforms do. With the schema's default
`num_workers` (2), the losses must equal a 0-worker run's bit for bit, a run killed after
step 4 and resumed must equal the uninterrupted run bit for bit (and log.jsonl marks the
resume), and 2 processes must match 1 process (1e-5, as the other parallelism tests).
The reference is always the uninterrupted single-process 0-worker run.
"""
import json
import os

import pytest
import yaml

from runner_helpers import launch, losses, write_project
from lavis_ib.cli.entry import run_entry
from lavis_ib.common.schema import RunConfig
from lavis_ib.runners.checkpointing.faults import FAULT_EXIT_CODE

AUGMENTED = {"toy_a": {"augment": True}, "toy_b": {"sample_ratio": 2.0, "augment": True}}


def _project(folder, **run):
    """An augmented toy project using the schema's default num_workers unless given."""
    path = write_project(folder, datasets=AUGMENTED, **run)
    with open(path) as f:
        project = yaml.safe_load(f)
    if "num_workers" not in run:
        del project["run"]["num_workers"]
    with open(path, "w") as f:
        yaml.safe_dump(project, f)
    return path


def _train(path, *options):
    from lavis_ib.cli import train

    argv = ["--cfg-path", path, *(["--options", *options] if options else [])]
    assert run_entry(train.main, argv, "python -m lavis_ib.train") == 0


@pytest.fixture(scope="module")
def zero_workers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rng_zero")
    _train(_project(folder, num_workers=0))
    return losses(os.path.join(folder, "run"))


@pytest.mark.integration
def test_default_workers_give_the_zero_worker_batches(tmp_path, zero_workers):
    assert RunConfig().num_workers == 2
    _train(_project(tmp_path))
    assert losses(os.path.join(tmp_path, "run")) == zero_workers


@pytest.mark.integration
def test_kill_and_resume_with_default_workers_is_bit_exact(tmp_path, zero_workers):
    path = _project(tmp_path, resume="auto")
    out = os.path.join(tmp_path, "run")
    killed = launch(path, env={"LAVIS_IB_FAULT_AFTER_STEP": "4"})
    assert killed.returncode == FAULT_EXIT_CODE, killed.stderr[-3000:]
    _train(path)
    assert losses(out) == zero_workers
    with open(os.path.join(out, "log.jsonl")) as f:
        resumes = [r for r in map(json.loads, f) if r.get("event") == "resume"]
    assert [r["step"] for r in resumes] == [4]


@pytest.mark.integration
def test_two_processes_with_default_workers_match_one(tmp_path, zero_workers):
    proc = launch(_project(tmp_path, distributed="ddp"), nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = losses(os.path.join(tmp_path, "run"))
    assert sorted(got) == sorted(zero_workers)
    assert all(abs(got[s] - zero_workers[s]) < 1e-5 for s in got)

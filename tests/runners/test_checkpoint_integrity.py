"""Checkpoint writes on a full disk, checkpoint indexes that point outside their folder,
and evaluations whose scores are NaN (docs/reliability.md, the checkpoint rows).

The full disk is injected, never real: every file a checkpoint writes outside the DCP
shard writer (trainer state, meta.json, the copy into best/, meta.json updates) is
counted, and the n-th fails with ENOSPC after it was created, for every n in turn.
"""
from __future__ import annotations

import errno
import math
import os
import pickle
import shutil
import warnings

import pytest
import torch
from torch.distributed.checkpoint import FileSystemReader

from lavis_ib.common import durable_files
from lavis_ib.common.errors import LavisIbError
from lavis_ib.runners.checkpointing.files import list_checkpoints, verify
from lavis_ib.runners.checkpointing.manager import CheckpointManager, CheckpointWriteError


class FullDisk:
    """Counts the files a checkpoint writes through `durable_files` and copies with
    `shutil.copyfile`; the `fail_at`-th is created and then fails with ENOSPC."""

    def __init__(self, monkeypatch, fail_at=None):
        self.fail_at, self.written = fail_at, []
        real_copy = shutil.copyfile

        def opener(path, mode="r", *args, **kwargs):
            f = open(path, mode, *args, **kwargs)
            if any(c in mode for c in "wax+"):
                try:
                    self._tick(path)
                except OSError:
                    f.close()
                    raise
            return f

        def copier(src, dst, *args, **kwargs):
            try:
                self._tick(dst)
            except OSError:
                open(dst, "wb").close()
                raise
            return real_copy(src, dst, *args, **kwargs)

        monkeypatch.setattr(durable_files, "open", opener, raising=False)
        monkeypatch.setattr(shutil, "copyfile", copier)

    def _tick(self, path):
        self.written.append(path)
        if len(self.written) == self.fail_at:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


@pytest.fixture(scope="module")
def trained(toys):
    """A toy model and its optimizer after one step (so the optimizer has state)."""
    torch.manual_seed(0)
    model = toys.ToyIB()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.ones_like(p)
    optimizer.step()
    return model, optimizer


def _save(manager, step, trained):
    model, optimizer = trained
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return manager.save(step, model, model, optimizer, {"step": step}, {"epoch": 0},
                            {"best": None, "validated": False})


def _checkpoint_writes(manager, trained):
    """What the runner does after a validation that improved: save, best/, meta update."""
    path = _save(manager, 4, trained)
    manager.save_best(path, 0.5, 4)
    manager.update_meta(path, best={"score": 0.5, "step": 4}, validated=True)


def _leftovers(root):
    return [os.path.join(d, n) for d, dirs, files in os.walk(root) for n in dirs + files
            if ".tmp-" in n]


def test_a_full_disk_at_every_write_of_a_checkpoint_is_one_line(tmp_path, monkeypatch, trained):
    template = tmp_path / "template"
    _save(CheckpointManager(str(template), keep_last=5), 2, trained)
    with monkeypatch.context() as m:   # a clean pass counts the writes
        disk = FullDisk(m)
        _checkpoint_writes(CheckpointManager(str(tmp_path / "clean"), keep_last=5), trained)
    names = [os.path.relpath(p, tmp_path / "clean" / "checkpoints") for p in disk.written]
    assert any(n.startswith(".tmp-step_00000004/trainer.json") for n in names)
    assert any(n.startswith(".tmp-step_00000004/meta.json") for n in names)
    assert any(n.startswith(".tmp-best/model/") for n in names)
    assert any(n.startswith("step_00000004/meta.json") for n in names)   # update_meta
    for n in range(1, len(disk.written) + 1):
        out = tmp_path / f"fail_{n}"
        shutil.copytree(template, out)
        manager = CheckpointManager(str(out), keep_last=5)
        with monkeypatch.context() as m:
            disk = FullDisk(m, fail_at=n)
            with pytest.raises(CheckpointWriteError) as info:
                _checkpoint_writes(manager, trained)
        line = str(info.value)
        assert "\n" not in line and "No space left on device" in line, (n, line)
        assert manager.root in line or str(out) in line, (n, line)
        assert _leftovers(manager.root) == [], (n, disk.written[-1])
        steps = list_checkpoints(manager.root)
        assert steps[0][0] == 2 and all(verify(p) is None for _, p in steps), n
        best = os.path.join(manager.root, "best")
        assert not os.path.exists(best) or verify(best) is None, n


def test_a_dcp_index_naming_a_file_outside_its_folder_is_refused(tmp_path, trained):
    """A re-sealed `.metadata` whose entry points at `../../outside.distcp`: refused with
    one line before DCP opens it."""
    from lavis_ib.runners.checkpointing.manager import load_trainable_weights
    from lavis_ib.runners.checkpointing.safe_load import UnsafeCheckpointError
    from fault_helpers import reseal

    path = _save(CheckpointManager(str(tmp_path), keep_last=5), 2, trained)
    model_dir = os.path.join(path, "model")
    md = FileSystemReader(model_dir).read_metadata()   # our own file
    outside = os.path.join(tmp_path, "outside.distcp")
    shutil.copy(os.path.join(model_dir, "__0_0.distcp"), outside)
    for info in md.storage_data.values():
        info.relative_path = os.path.relpath(outside, model_dir)
    with open(os.path.join(model_dir, ".metadata"), "wb") as f:
        pickle.dump(md, f)
    reseal(path)
    assert verify(path) is None
    with pytest.raises(UnsafeCheckpointError, match=r"outside .*nothing outside was read"):
        load_trainable_weights(trained[0], path)   # the index is read before any shard


# -- evaluations with NaN scores --------------------------------------------------------
def test_nan_scores_stop_the_evaluation_before_any_metric(tmp_path, toys):
    from lavis_ib.runners.eval_loop import NonFiniteScoresError, report_split

    class Scored(toys.ToyClsTask):
        def metrics(self, records, dataset):
            raise AssertionError("a metric was computed from NaN scores")

    records = [{"id": 1, "prob": 0.7, "pred": 1, "label": 1},
               {"id": 2, "prob": math.nan, "pred": 0, "label": 1}]
    with pytest.raises(NonFiniteScoresError, match=r"toy/val: 1 of 2 predictions hold NaN "
                                                   r"scores \(e.g. id 2, field 'prob'\)"):
        report_split(Scored(), records, [], None, str(tmp_path), "toy/val")
    assert not os.listdir(tmp_path)   # no predictions or metrics written

    class NanMetric(toys.ToyClsTask):
        def metrics(self, records, dataset):
            return {"auc": math.nan}

    with pytest.raises(NonFiniteScoresError, match=r"the metrics \['auc'\] are not finite"):
        report_split(NanMetric(), records[:1], [], None, str(tmp_path), "toy/val")


def test_nan_weights_in_the_model_stop_a_ranking_task_with_one_line(tiny_vicuna):
    """The real tiny model with one NaN in its projection scores every candidate NaN; the
    multiple-choice task stops instead of picking the first choice of a NaN ranking."""
    from lavis_ib import registry
    from lavis_ib.common.config import compose_dataset

    task = registry.get_task_class("multiple_choice").for_dataset(
        "scienceqa", compose_dataset("scienceqa", {"task": "multiple_choice"}))
    batch = {"image": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)),
             "question_id": ["p1", "p2"], "question": ["Which?", "What?"], "context": ["", ""],
             "choices": [["red", "blue"], ["yes", "no"]], "correct_choice_idx": [1, 0]}
    assert len(task.valid_step(tiny_vicuna, batch)) == 2   # finite: scored as usual
    weight = tiny_vicuna.llm_proj.weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight[0, 0] = float("nan")
        with pytest.raises(LavisIbError, match=r"scienceqa: the model scored 4 candidates as NaN"):
            task.valid_step(tiny_vicuna, batch)
    finally:
        with torch.no_grad():
            weight.copy_(saved)

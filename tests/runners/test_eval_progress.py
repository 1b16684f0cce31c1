"""Held-out evaluation shows a progress bar on rank 0 only (stderr, named after the
split) that leaves the output files and the resume of an evaluation untouched, and logs
its metrics rounded while metrics.json keeps every digit."""
import json
import logging

import torch

from lavis_ib.models.base_model import BaseModel
from lavis_ib.runners import eval_loop
from lavis_ib.runners.eval_loop import evaluate_split, progress


class _Task:
    def before_evaluation(self, model, dataset):
        pass

    def valid_step(self, model, samples):
        return [{"id": i, "label": y} for i, y in zip(samples["instance_id"], samples["label"])]

    def metrics(self, records, dataset):
        return {"acc": 100 / 3, "n": len(records)}


def _evaluate(ds, out_dir):
    return evaluate_split(BaseModel(), _Task(), ds, "toy", "val", batch_size=3, num_workers=0,
                          device=torch.device("cpu"), out_dir=str(out_dir), fingerprint="fp")


def test_rank_0_shows_the_bar_and_the_files_and_resume_are_unchanged(toys, tmp_path, capsys,
                                                                      caplog, monkeypatch):
    monkeypatch.delenv("LAVIS_IB_NO_PROGRESS", raising=False)
    ds = toys.ToyDataset(7, 1, "val")
    with caplog.at_level(logging.INFO, logger="lavis_ib.runners.eval_loop"):
        first = _evaluate(ds, tmp_path)
    err = capsys.readouterr().err
    assert "toy/val:" in err and "/3 [" in err   # 7 samples in batches of 3
    assert "toy/val: acc 33.33, n 7 (7 samples, 0 unreadable)" in caplog.text
    assert json.load(open(tmp_path / "metrics.json"))["acc"] == 100 / 3   # full precision
    lines = open(tmp_path / "predictions.jsonl").read().splitlines()
    assert len(lines) == 7 and all(json.loads(line)["id"] is not None for line in lines)
    # the partial files of this evaluation are still there: a rerun reuses every batch
    again = _evaluate(ds, tmp_path)
    assert again == first and "toy/val" in capsys.readouterr().err
    assert open(tmp_path / "predictions.jsonl").read().splitlines() == lines


def test_no_bar_on_other_ranks_or_when_switched_off(monkeypatch, capsys):
    loader = [1, 2, 3]
    monkeypatch.delenv("LAVIS_IB_NO_PROGRESS", raising=False)
    monkeypatch.setattr(eval_loop, "get_rank", lambda: 1)
    assert progress(loader, "toy/val") is loader
    monkeypatch.setattr(eval_loop, "get_rank", lambda: 0)
    assert list(progress(loader, "toy/val")) == loader and "toy/val" in capsys.readouterr().err
    monkeypatch.setenv("LAVIS_IB_NO_PROGRESS", "1")
    assert progress(loader, "toy/val") is loader
    assert capsys.readouterr().err == ""

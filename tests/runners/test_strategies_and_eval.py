"""Clear errors for misused strategies; the evaluation loop's exactness checks."""
import json

import pytest
import torch

from lavis_ib.common.errors import ConfigError, LavisIbError
from lavis_ib.common.schema import validate_run
from lavis_ib.models.base_model import BaseModel
from lavis_ib.runners.eval_loop import eval_indices, eval_splits, evaluate_split, select_score
from lavis_ib.runners.strategies import DistInfo, Strategy, setup_distributed


def test_ddp_or_fsdp_outside_torchrun_names_torchrun(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ConfigError, match="torchrun"):
        setup_distributed(validate_run({"distributed": "fsdp", "device": "cpu"}))


def test_none_under_a_multi_process_launch_is_an_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="ddp or fsdp"):
        setup_distributed(validate_run({"distributed": "none", "device": "cpu"}))


class _NoUnits(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)


def test_fp16_with_fsdp_and_checkpointing_without_units_are_errors(toys):
    with pytest.raises(ConfigError, match="bf16"):
        Strategy(validate_run({"distributed": "fsdp", "amp": "fp16"}), DistInfo())
    strategy = Strategy(validate_run({"activation_checkpointing": True}), DistInfo())
    with pytest.raises(ConfigError, match="checkpoint_units"):
        strategy.wrap(_NoUnits())  # BaseModel's default: no checkpoint units
    with pytest.raises(ConfigError, match="run.device"):
        setup_distributed(validate_run({"device": "tpu"}))


def test_activation_checkpointing_keeps_gradients(toys):
    torch.manual_seed(0)
    plain, ckpt = toys.ToyIB(), toys.ToyIB()
    ckpt.load_state_dict(plain.state_dict())
    Strategy(validate_run({"activation_checkpointing": True}), DistInfo()).wrap(ckpt)
    ds = toys.ToyDataset(4, 1, "train")
    batch = ds.collater([ds[i] for i in range(4)])
    for model in (plain, ckpt):
        model(batch)["loss"].backward()
    for (n, p), (_, q) in zip(plain.named_parameters(), ckpt.named_parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p.grad, q.grad, msg=n)
    assert set(ckpt.state_dict()) == set(plain.state_dict())  # names unchanged


class _Task:
    def __init__(self, dup=False):
        self.dup, self.seen = dup, 0

    def before_evaluation(self, model, dataset):
        self.seen += 1

    def valid_step(self, model, samples):
        ids = samples["instance_id"]
        return [{"id": "same" if self.dup else i, "label": y} for i, y in zip(ids, samples["label"])]

    def metrics(self, records, dataset):
        return {"n": len(records)}


def test_eval_split_writes_every_sample_once(toys, tmp_path):
    ds = toys.ToyDataset(7, 1, "val")
    task = _Task()
    metrics = evaluate_split(BaseModel(), task, ds, "toy", "val", batch_size=3, num_workers=0,
                             device=torch.device("cpu"), out_dir=str(tmp_path))
    assert metrics == {"n": 7, "num_samples": 7, "num_unreadable": 0} and task.seen == 1
    rows = [json.loads(line) for line in open(tmp_path / "predictions.jsonl")]
    assert len({r["id"] for r in rows}) == 7
    assert json.load(open(tmp_path / "metrics.json"))["n"] == 7


def test_duplicate_ids_are_an_error(toys):
    ds = toys.ToyDataset(4, 1, "val")
    with pytest.raises(LavisIbError, match="unique"):
        evaluate_split(BaseModel(), _Task(dup=True), ds, "toy", "val", batch_size=2, num_workers=0,
                       device=torch.device("cpu"), out_dir=None)


def test_eval_subset_is_fixed_and_sorted(toys):
    ds = toys.ToyDataset(50, 1, "val")
    a, b = eval_indices(ds, 10), eval_indices(ds, 10)
    assert a == b == sorted(a) and len(set(a)) == 10 and max(a) < 50
    assert eval_indices(ds, None) == list(range(50)) == eval_indices(ds, 99)
    metrics = evaluate_split(BaseModel(), _Task(), ds, "toy", "val", batch_size=4, num_workers=0,
                             device=torch.device("cpu"), out_dir=None, eval_subset=10)
    assert metrics["num_samples"] == 10


def test_eval_splits_and_select_score():
    have = {"val": 1, "test": 2}
    assert eval_splits("x", {}, have, ["test", "val"]) == ["test", "val"]
    assert eval_splits("x", {"eval_splits": []}, have, ["val"]) == []
    with pytest.raises(ConfigError, match="not built"):
        eval_splits("x", {"eval_splits": ["train"]}, have, ["val"])
    results = {"a": {"acc": 50.0}, "b": {"cider": 100.0}}
    assert select_score(results, ["a.acc", "b.cider"]) == 75.0
    with pytest.raises(ConfigError, match="a.cider.*computed: a.acc, b.cider"):
        select_score(results, ["a.cider"])


def test_partial_predictions_cut_a_torn_line_and_continue(tmp_path):
    """A kill in the middle of a record: the rerun reuses the whole records, cuts the torn
    line and appends from there, leaving the file an uninterrupted evaluation writes."""
    from lavis_ib.runners.eval_resume import PARTIAL, PartialWriter, read_done

    records = [{"id": 1, "answer": "yes"}, {"id": "b", "answer": "no"}]
    writer = PartialWriter(str(tmp_path), "fp", rank=0)
    writer.write(records)
    writer.close()
    path = tmp_path / PARTIAL.format(rank=0)
    whole = path.read_text()
    path.write_text(whole[:-6])                       # torn in the middle of record "b"
    assert read_done(str(tmp_path), "fp") == {1: records[0]}
    assert read_done(str(tmp_path), "another") == {}  # another evaluation's: not reused
    writer = PartialWriter(str(tmp_path), "fp", rank=0)
    writer.write(records[1:])
    writer.close()
    assert path.read_text() == whole

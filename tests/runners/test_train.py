"""Single-process training end to end on the toy model: files, checkpoints, frozen
weights, best selection, exact resume from a path, a non-finite loss, evaluate, export."""
import json
import os

import pytest
import torch
import torch.distributed.checkpoint as dcp

from runner_helpers import losses, write_project
from lavis_ib.common.config import Config
from lavis_ib.common.errors import ConfigError, LavisIbError
from lavis_ib.runners.nonfinite import NonFiniteLossError
from lavis_ib.runners.strategies import setup_distributed


def train_inprocess(cfg_path, options=()):
    from lavis_ib.cli.session import build

    cfg = Config(cfg_path, list(options))
    _, model, _, runner = build(cfg, setup_distributed(cfg.run_cfg))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    result = runner.train()
    return model, frozen, result, cfg.run_cfg.output_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    path = write_project(folder, keep_last=2)
    model, frozen, result, out = train_inprocess(path)
    return {"path": path, "model": model, "frozen": frozen, "result": result, "out": out}


def _ckpt_keys(folder):
    return set(dcp.FileSystemReader(folder).read_metadata().state_dict_metadata)


def test_run_folder_holds_config_version_logs_and_tensorboard(trained):
    out = trained["out"]
    assert os.path.isfile(os.path.join(out, "config.yaml"))
    info = json.load(open(os.path.join(out, "run_info.json")))
    assert info["lavis_ib"] and info["global_batch_size"] == 8 and info["accum_steps"] == 2
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(out, "tb")))
    assert sorted(losses(out)) == [1, 2, 3, 4, 5, 6]
    records = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    lrs = {r["step"]: r["lr"] for r in records if r["type"] == "train"}
    assert lrs[1] == 0.001 and lrs[3] == 0.05  # warm-up 2 steps from warmup_lr to init_lr
    assert {r["step"] for r in records if r["type"] == "val"} == {3, 6}


def test_frozen_weights_bit_identical_and_trainable_changed(trained):
    model = trained["model"]
    for name, before in trained["frozen"].items():
        assert torch.equal(dict(model.named_parameters())[name], before), name
    fresh = type(model)()
    assert not torch.equal(fresh.query_tokens, model.query_tokens)


def test_checkpoints_hold_trainable_weights_only_and_are_pruned(trained, toys):
    root = os.path.join(trained["out"], "checkpoints")
    assert sorted(os.listdir(root)) == ["best", "step_00000004", "step_00000006"]  # keep_last=2
    trainable = {n for n, p in trained["model"].named_parameters() if p.requires_grad}
    step = os.path.join(root, "step_00000006")
    assert _ckpt_keys(os.path.join(step, "model")) == trainable
    optim_keys = _ckpt_keys(os.path.join(step, "optim"))
    assert optim_keys and all(any(t in k for t in trainable) or "param_groups" in k
                              for k in optim_keys)
    assert not any(f in k for k in optim_keys for f in trained["frozen"])
    meta = json.load(open(os.path.join(root, "best", "meta.json")))
    assert meta["step"] == trained["result"]["best"]["step"]
    assert meta["score"] == trained["result"]["best"]["score"]


def test_best_is_the_highest_mean_of_select_metric(trained):
    records = [json.loads(line) for line in open(os.path.join(trained["out"], "log.jsonl"))]
    vals = {r["step"]: r for r in records if r["type"] == "val"}
    for r in vals.values():
        m = r["metrics"]
        assert r["score"] == pytest.approx((m["toy_a"]["acc"] + m["toy_b"]["acc"]) / 2)
    best = max(vals.values(), key=lambda r: r["score"])
    assert trained["result"]["best"] == {"score": best["score"], "step": best["step"]}
    pred_dir = os.path.join(trained["out"], "eval", "step_00000003", "toy_a_val")
    ids = [json.loads(line)["id"] for line in open(os.path.join(pred_dir, "predictions.jsonl"))]
    assert len(ids) == len(set(ids)) == 10


@pytest.mark.integration
def test_resume_from_a_checkpoint_path_is_exact(trained, tmp_path):
    ckpt = os.path.join(trained["out"], "checkpoints", "step_00000004")
    path = write_project(tmp_path, keep_last=2, resume=ckpt)
    model, _, result, out = train_inprocess(path)
    reference = losses(trained["out"])
    assert losses(out) == {5: reference[5], 6: reference[6]}
    for (n, p), (_, q) in zip(model.named_parameters(), trained["model"].named_parameters()):
        assert torch.equal(p, q), n
    assert result["best"] == trained["result"]["best"]


@pytest.mark.integration
def test_non_finite_loss_stops_with_the_last_good_checkpoint(tmp_path):
    path = write_project(tmp_path, model={"nan_after": 6})  # 2 micro-batches per step
    with pytest.raises(NonFiniteLossError, match=r"nan at step 4.*step_00000003"):
        train_inprocess(path)
    root = os.path.join(tmp_path, "run", "checkpoints")
    assert "step_00000004" not in os.listdir(root)
    events = [json.loads(line) for line in open(os.path.join(tmp_path, "run", "log.jsonl"))]
    assert events[-1]["event"] == "non_finite_loss"


def test_evaluate_entry_point_and_export(trained, tmp_path, toys):
    from lavis_ib.cli import evaluate, export

    out = str(tmp_path / "eval_run")
    assert evaluate.main(["--cfg-path", trained["path"], "--checkpoint", trained["out"],
                          "--options", f"run.output_dir={out}"]) == 0
    best_step = trained["result"]["best"]["step"]
    for name in ("toy_a", "toy_b"):
        got = json.load(open(os.path.join(out, "eval", f"{name}_val", "metrics.json")))
        want = json.load(open(os.path.join(trained["out"], "eval", f"step_{best_step:08d}",
                                           f"{name}_val", "metrics.json")))
        assert got == want
    assert export.main([trained["out"], str(tmp_path / "hf"), "--checkpoint", "latest",
                        "--plugins", "runner_toys"]) == 0
    state = torch.load(tmp_path / "hf" / "toy_model.pt")
    for name, param in trained["model"].named_parameters():
        assert torch.equal(state[name], param), name


def test_checkpoint_of_another_model_is_a_clear_error(trained, toys):
    other = toys.ToyIB(dim=4)
    from lavis_ib.runners.checkpointing.manager import load_trainable_weights

    with pytest.raises(LavisIbError, match="does not match"):
        load_trainable_weights(other, trained["out"])


@pytest.mark.integration
def test_without_validation_the_last_step_is_still_checkpointed(tmp_path):
    path = write_project(tmp_path, max_iters=2, val_every=0, save_every=0)
    _, _, result, out = train_inprocess(path)
    assert result["best"] == {"score": None, "step": None}
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["step_00000002"]


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
@pytest.mark.integration
def test_mixed_precision_trains(tmp_path, amp):
    """bf16 autocast; fp16 autocast with a gradient scaler (its state is checkpointed)."""
    path = write_project(tmp_path, max_iters=2, val_every=0, amp=amp)
    model, _, _, out = train_inprocess(path)
    got = losses(out)
    assert sorted(got) == [1, 2] and all(map(lambda v: v == v and abs(v) < 1e3, got.values()))
    assert model.query_tokens.dtype == torch.float32  # fp32 master weights
    with open(os.path.join(out, "checkpoints", "step_00000002", "trainer.json")) as f:
        trainer = json.load(f)
    assert (trainer["scaler"] is not None) == (amp == "fp16")


def test_entry_point_reports_bad_input_in_one_line(tmp_path, capsys):
    from lavis_ib.cli.entry import run_entry
    from lavis_ib.cli.train import main

    assert run_entry(main, ["--cfg-path", str(tmp_path / "nope.yaml")], "python -m lavis_ib.train") == 2
    err = capsys.readouterr().err
    assert "nope.yaml" in err and "Traceback" not in err
    path = write_project(tmp_path, distributed="ddp")
    assert run_entry(main, ["--cfg-path", path], "python -m lavis_ib.train") == 2
    assert "torchrun" in capsys.readouterr().err


@pytest.mark.integration
def test_select_metric_of_a_dataset_not_validated_is_an_early_error(tmp_path):
    path = write_project(tmp_path, datasets={"toy_a": {}, "toy_b": {"eval_splits": []}})
    with pytest.raises(ConfigError, match="toy_b.acc.*validated: \\['toy_a'\\]"):
        train_inprocess(path)
    assert not os.path.exists(os.path.join(tmp_path, "run", "checkpoints"))


@pytest.mark.integration
def test_eval_splits_outside_valid_splits_are_not_validated(tmp_path):
    path = write_project(tmp_path, max_iters=3, select_metric=["toy_a.acc"],
                         datasets={"toy_a": {}, "toy_b": {"eval_splits": ["train"]}})
    _, _, result, out = train_inprocess(path)
    assert result["best"]["step"] == 3
    assert sorted(os.listdir(os.path.join(out, "eval", "step_00000003"))) == ["toy_a_val"]

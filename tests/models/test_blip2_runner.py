"""BLIP-2 through the same YAML runner as InstructBLIP, on fixture copies of the data
(`configs/projects/blip2/demo_tiny_blip2.yaml`): `blip2_t5` trains and validates by
generation (OK-VQA, A-OKVQA) and by ranking (HatefulMemes), on one process and with FSDP
on two (the same losses); `blip2_opt` evaluates the same tasks from a checkpoint of its
own run, with nothing in tasks/ or runners/ knowing the OPT family."""
from __future__ import annotations

import json
import os

import pytest
import torch

from lavis_ib.common.config import Config
from lavis_ib.common.paths import package_path
from tests.runners.runner_helpers import launch, losses

PROJECT = package_path("configs/projects/blip2/demo_tiny_blip2.yaml")
DATASETS = ("ok_vqa", "aok_vqa", "hateful_memes")
# no dropout (the Q-Former's, and the frozen T5's, which draws from each process's global
# RNG under llm_train_mode: lavis): one and two processes see equal activations
NO_DROPOUT = ["+model.qformer.hidden_dropout_prob=0.0",
              "+model.qformer.attention_probs_dropout_prob=0.0", "model.llm_train_mode=eval"]


@pytest.fixture(scope="module")
def data(fixture_root):
    return fixture_root.path


def _config(data: str, options) -> Config:
    os.environ["LAVIS_IB_DEMO_DATA"] = data
    try:
        return Config(PROJECT, list(options))
    finally:
        del os.environ["LAVIS_IB_DEMO_DATA"]


def _run(data: str, out: str, options=(), evaluate=False):
    from lavis_ib.cli.session import build
    from lavis_ib.runners.strategies import setup_distributed

    cfg = _config(data, [*NO_DROPOUT, f"run.output_dir={out}", *options])
    _, model, _, runner = build(cfg, setup_distributed(cfg.run_cfg))
    return model, (runner.evaluate() if evaluate else runner.train())


@pytest.fixture(scope="module")
def t5_run(data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("blip2_t5_run"))
    model, result = _run(data, out)
    return {"out": out, "model": model, "result": result}


def _records(folder: str) -> list[dict]:
    with open(os.path.join(folder, "predictions.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_blip2_t5_trains_generates_and_ranks(t5_run):
    out = t5_run["out"]
    assert sorted(losses(out)) == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(v)) for v in losses(out).values())
    step = os.path.join(out, "eval", "step_00000004")
    for name in ("ok_vqa_val", "aok_vqa_val", "hateful_memes_val"):
        metrics = json.load(open(os.path.join(step, name, "metrics.json")))
        assert metrics["num_samples"] == len(_records(os.path.join(step, name))) > 0, name
    assert "auc" in json.load(open(os.path.join(step, "hateful_memes_val", "metrics.json")))
    with open(os.path.join(out, "config.yaml")) as f:
        assert "blip2_t5" in f.read()
    model = t5_run["model"]
    assert model.llm_family == "flant5"
    ckpt = os.path.join(out, "checkpoints", "step_00000004", "model")
    import torch.distributed.checkpoint as dcp

    keys = set(dcp.FileSystemReader(ckpt).read_metadata().state_dict_metadata)
    assert keys == {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.integration
def test_fsdp_on_two_processes_matches_one_process(t5_run, data, tmp_path):
    out = str(tmp_path / "fsdp")
    proc = launch(PROJECT, [*NO_DROPOUT, "run.distributed=fsdp", f"run.output_dir={out}"],
                  nproc=2, timeout=240, env={"LAVIS_IB_DEMO_DATA": data})
    assert proc.returncode == 0, proc.stderr[-3000:]
    got, want = losses(out), losses(t5_run["out"])
    assert sorted(got) == sorted(want) == [1, 2, 3, 4]
    for step in want:
        assert got[step] == pytest.approx(want[step], abs=1e-5, rel=1e-5)
    for name in ("ok_vqa_val", "hateful_memes_val"):   # every sample once, over 2 ranks
        ids = [sorted(r["id"] for r in _records(os.path.join(run, "eval", "step_00000004", name)))
               for run in (out, t5_run["out"])]
        assert ids[0] == ids[1] and len(set(ids[0])) == len(ids[0])


@pytest.mark.integration
def test_blip2_opt_trains_and_evaluates_every_task(data, tmp_path):
    opt = ["model.arch=blip2_opt", "model.model_type=tiny_opt", "run.max_iters=2",
           "run.val_every=2"]
    model, _ = _run(data, str(tmp_path / "opt"), opt)
    assert model.llm_family == "opt" and not model.default_append_eos
    assert sorted(losses(str(tmp_path / "opt"))) == [1, 2]
    _run(data, str(tmp_path / "opt_eval"), opt, evaluate=True)
    for name in ("ok_vqa_val", "hateful_memes_val"):
        assert _records(str(tmp_path / "opt_eval" / "eval" / name))


def test_export_of_a_blip2_run_loads_in_transformers(t5_run, tmp_path):
    from transformers import Blip2ForConditionalGeneration

    from lavis_ib.cli import export

    assert export.main([t5_run["out"], str(tmp_path / "hf")]) == 0
    theirs = Blip2ForConditionalGeneration.from_pretrained(str(tmp_path / "hf"))
    trained = t5_run["model"]
    assert torch.equal(theirs.query_tokens.detach(), trained.query_tokens.detach())
    assert torch.equal(theirs.language_projection.weight.detach(), trained.llm_proj.weight.detach())

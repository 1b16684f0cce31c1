"""Packed training through the runner (tiny_vicuna with LoRA adapters, a fixture copy of
OK-VQA, no dropout anywhere): a packed run follows the padded run (1 process, DDP and FSDP
on 2 processes) and the runner logs the family's verdict. Exact resume with packing on is
tests/runners/test_lora_fsdp.py's kill-and-resume test (its project packs: `auto`)."""
from __future__ import annotations

import os

import pytest
import torch

from lavis_ib.common.config import Config
from lavis_ib.runners.checkpointing.manager import load_trainable_weights
from lavis_ib.runners.strategies import setup_distributed
from tests.runners.runner_helpers import LORA, launch, losses
from tests.runners.runner_helpers import lora_okvqa_project as _project

def _run_here(folder, data, **run):
    from lavis_ib.cli.session import build

    cfg = Config(_project(folder, data, **run), [])
    _, model, _, runner = build(cfg, setup_distributed(cfg.run_cfg))
    runner.train()
    trained = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    return {"out": cfg.run_cfg.output_dir, "weights": trained, "packs": model.adapter.packs()}


@pytest.fixture(scope="module")
def padded(fixture_root, tmp_path_factory):
    return _run_here(tmp_path_factory.mktemp("padded"), fixture_root.path, packing=False)


@pytest.fixture(scope="module")
def packed(fixture_root, tmp_path_factory):
    return _run_here(tmp_path_factory.mktemp("packed"), fixture_root.path, packing=True)


def _final_weights(out: str) -> dict[str, torch.Tensor]:
    from lavis_ib import load_model

    model = load_model("instructblip", "tiny_vicuna", llm_lora=LORA)
    load_trainable_weights(model, out)
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def _assert_follows(out: str, reference: dict) -> None:
    got, want = losses(out), losses(reference["out"])
    assert sorted(got) == sorted(want) == [1, 2, 3, 4]
    assert got[1] == pytest.approx(want[1], rel=1e-6)
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-5, abs=1e-6)
    final = _final_weights(out)
    assert set(final) == set(reference["weights"])
    for name, param in final.items():
        torch.testing.assert_close(param, reference["weights"][name], atol=1e-5, rtol=1e-5)


@pytest.mark.integration
def test_one_process_packed_follows_padded(padded, packed):
    assert packed["packs"] and not padded["packs"]
    _assert_follows(packed["out"], padded)


@pytest.mark.integration
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_packed_follow_one_process_padded(fixture_root, padded, tmp_path, strategy):
    path = _project(tmp_path, fixture_root.path, distributed=strategy, packing=True)
    proc = launch(path, nproc=2, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "packed training on: packed equals separate" in proc.stderr
    _assert_follows(os.path.join(tmp_path, "run"), padded)

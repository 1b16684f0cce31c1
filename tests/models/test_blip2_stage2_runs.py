"""Stage 2 through the runner (`configs/projects/blip2/pretrain_stage2_tiny.yaml`, fixture
copies of COCO): started from a stage-1 file, the run trains with the text side carried
frozen (its checkpoints hold the trainable weights only), DDP and FSDP on two processes
give the losses of one process (a trainable parameter without gradient would stop DDP),
and the run's export starts InstructBLIP with nothing random."""
from __future__ import annotations

import os

import pytest
import torch

from lavis_ib.common.paths import package_path
from tests.models.test_blip2_stage2 import write_lavis_stage1
from tests.runners.runner_helpers import launch, losses

PROJECT = package_path("configs/projects/blip2/pretrain_stage2_tiny.yaml")
NO_DROPOUT = ["+model.qformer.hidden_dropout_prob=0.0",
              "+model.qformer.attention_probs_dropout_prob=0.0"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, fixture_root):
    root = tmp_path_factory.mktemp("stage2_runs")
    write_lavis_stage1(str(root / "blip2_pretrained.pth"))
    return {"data": fixture_root.path, "stage1": str(root / "blip2_pretrained.pth")}


def _options(inputs, out: str, *extra: str) -> list[str]:
    return [*NO_DROPOUT, f"model.init_from=[{inputs['stage1']}]", "model.allow_random_init=false",
            f"run.output_dir={out}", *extra]


@pytest.fixture(scope="module")
def one_process(inputs, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("one") / "run")
    proc = launch(PROJECT, _options(inputs, out), timeout=240,
                  env={"LAVIS_IB_DEMO_DATA": inputs["data"]})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.integration
def test_stage2_run_from_stage1_exports_a_complete_instructblip_start(one_process, inputs, tmp_path):
    import torch.distributed.checkpoint as dcp

    from lavis_ib import load_model
    from lavis_ib.cli import export

    assert sorted(losses(one_process)) == [1, 2, 3, 4]
    ckpt = os.path.join(one_process, "checkpoints", "step_00000004", "model")
    keys = set(dcp.FileSystemReader(ckpt).read_metadata().state_dict_metadata)
    assert keys and not any("ffn_text" in k or "_embeddings" in k or k.startswith("lm_head")
                            for k in keys)
    assert "llm_proj.weight" in keys
    assert export.main([one_process, str(tmp_path / "hf")]) == 0
    assert os.path.isfile(tmp_path / "hf" / "lavis_ib_qformer_text.safetensors")
    ib = load_model("instructblip", "tiny_vicuna", init_from=[str(tmp_path / "hf")],
                    allow_random_init=False, llm_config=_llm_config(),
                    llm_tokenizer="assets/tiny_mistral_tokenizer")
    assert ib.init_report["unfilled"] == []
    stage1 = torch.load(inputs["stage1"], weights_only=True)["model"]
    assert torch.equal(ib.qformer.word_embeddings.weight,
                       stage1["Qformer.bert.embeddings.word_embeddings.weight"])


def _llm_config() -> dict:
    from tests.models.test_blip2_stage2 import load_model_cfg

    return load_model_cfg("tiny_vicuna")["llm_config"]


@pytest.mark.integration
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one_process(strategy, one_process, inputs, tmp_path):
    """The carried text side is frozen inside the Q-Former's layers: DDP sees no trainable
    parameter without a gradient, FSDP shards units that mix frozen and trained tensors."""
    out = str(tmp_path / strategy)
    proc = launch(PROJECT, _options(inputs, out, f"run.distributed={strategy}"), nproc=2, timeout=300,
                  env={"LAVIS_IB_DEMO_DATA": inputs["data"]})
    assert proc.returncode == 0, proc.stderr[-3000:]
    got, want = losses(out), losses(one_process)
    assert sorted(got) == sorted(want) == [1, 2, 3, 4]
    for step in want:
        assert got[step] == pytest.approx(want[step], abs=1e-5, rel=1e-5)

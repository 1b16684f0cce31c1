"""Quantised frozen LLM (`model.llm_quantization: int8_weight_only`) in runs: checkpoints,
resume and evaluation rebuilding the quantised LLM, DDP."""
from __future__ import annotations

import logging

import pytest
import torch

from lavis_ib import load_model
from lavis_ib.models.llm import quantization as lq

MODE = "int8_weight_only"


def _ok_vqa_project(folder: str, data: str, **model: object) -> str:
    """A one-dataset training project on the tiny Vicuna type with a quantised LLM."""
    import yaml

    annotations = {split: {"storage": [f"ok_vqa/OpenEnded_mscoco_{split}2014_questions.json",
                                       f"ok_vqa/mscoco_{split}2014_annotations.json"]}
                   for split in ("train", "val")}
    images = {"name": "blip_image_eval", "image_size": 32}
    project = {
        "model": {"arch": "instructblip", "model_type": "tiny_vicuna", "llm_quantization": MODE,
                  **model},
        "datasets": {"ok_vqa": {
            "cache_root": data, "vis_processor": {"train": images, "eval": images},
            "build_info": {"annotations": annotations, "images": {"storage": "ok_vqa/images"}},
            "generate": {"num_beams": 1, "max_length": 4, "min_length": 1}}},
        "run": {"task": "instruction_tuning", "max_iters": 2, "val_every": 2, "save_every": 1,
                "keep_last": 3, "global_batch_size": 2, "batch_size_train": 2,
                "batch_size_eval": 4, "init_lr": 1e-3, "warmup_steps": 1, "amp": "none",
                "device": "cpu", "num_workers": 0, "select_metric": ["ok_vqa.acc"],
                "output_dir": f"{folder}/run"}}
    with open(f"{folder}/project.yaml", "w") as f:
        yaml.safe_dump(project, f)
    return f"{folder}/project.yaml"


class _Messages(logging.Handler):
    """Log messages of lavis_ib (the entry points set up their own handlers, so pytest's
    caplog on the root logger does not see them)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def one_quantised_build_then(self, then: str) -> None:
        found = [i for i, m in enumerate(self.messages) if "int8_weight_only: 14 linear layers" in m]
        assert len(found) == 1, self.messages
        assert any(then in m for m in self.messages[found[0]:]), self.messages
        self.messages.clear()


@pytest.mark.integration
def test_run_checkpoints_hold_trainable_parts_and_rebuilds_quantise_again(tmp_path, fixture_root):
    """Training with a quantised LLM; its checkpoints hold only the trainable parts;
    resuming, and evaluating from the run's own config.yaml, rebuild the quantised LLM."""
    import torch.distributed.checkpoint as dcp

    from lavis_ib.cli import evaluate, train

    project = _ok_vqa_project(str(tmp_path), fixture_root.path)
    run = tmp_path / "run"
    log, package_logger = _Messages(), logging.getLogger("lavis_ib")
    package_logger.addHandler(log)
    try:
        assert train.main(["--cfg-path", project]) == 0
        log.one_quantised_build_then("finished at step 2")
        keys = set(dcp.FileSystemReader(str(run / "checkpoints" / "step_00000002" / "model"))
                   .read_metadata().state_dict_metadata)
        trainable = {n for n, _ in load_model("instructblip", "tiny_vicuna").trainable_parameters()}
        assert keys == trainable
        log.messages.clear()
        assert "llm_quantization: int8_weight_only" in (run / "config.yaml").read_text()
        # extending the finished run is a schedule change: allowed explicitly
        assert train.main(["--cfg-path", project, "--options", "run.max_iters=3",
                           "run.resume=auto", "run.allow_config_change=true"]) == 0
        log.one_quantised_build_then("resumed from")
        assert evaluate.main(["--cfg-path", str(run / "config.yaml"), "--checkpoint", str(run)]) == 0
        log.one_quantised_build_then("63 trainable tensors restored")
    finally:
        package_logger.removeHandler(log)


def test_ddp_wraps_the_quantised_model_and_gradients_flow(tmp_path):
    """DDP copies every parameter it syncs into flat buckets, which torchao's int8 tensors
    do not support; the frozen quantised weights are listed in
    `_ddp_params_and_buffers_to_ignore` (one process here: the 2-process run behaves the same)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    quant = load_model("instructblip", "tiny_vicuna", llm_quantization=MODE)
    ignored = set(quant._ddp_params_and_buffers_to_ignore)
    assert ignored == {f"llm.{n}.weight" for n in lq.quantized_linear_names(quant.llm)}
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0,
                            world_size=1)
    try:
        wrapped = DistributedDataParallel(quant, find_unused_parameters=True)
        quant.train()
        wrapped({"image": torch.randn(2, 3, 32, 32), "text_input": ["a", "b"], "text_output": ["c", "d"]})["loss"].backward()
        assert quant.query_tokens.grad is not None and quant.query_tokens.grad.abs().sum() > 0
        del wrapped
    finally:
        dist.destroy_process_group()


@pytest.mark.integration
def test_a_quantised_lora_run_exports_full_precision_merged_weights(tmp_path, capsys, fixture_root):
    """Adapters trained on the int8 LLM; `lavis-ib export` builds the LLM unquantised and
    merges them there: transformers loads the directory, and its q_proj weight is the
    full-precision tiny_vicuna weight + (alpha / r) B A of the checkpoint's adapters (by
    hand), not an int8 rounding of it."""
    import torch.distributed.checkpoint as dcp
    from transformers import InstructBlipForConditionalGeneration

    from lavis_ib.cli import export, train

    lora = {"r": 4, "alpha": 8}
    project = _ok_vqa_project(str(tmp_path), fixture_root.path, llm_lora=lora)
    assert train.main(["--cfg-path", project, "--options", "run.val_every=0",
                       "run.select_metric=[]"]) == 0
    step = tmp_path / "run" / "checkpoints" / "step_00000002" / "model"
    prefix = "llm.model.layers.0.self_attn.q_proj"
    names = [f"{prefix}.lora_A.default.weight", f"{prefix}.lora_B.default.weight"]
    plain = load_model("instructblip", "tiny_vicuna", llm_lora=lora)
    state = {n: torch.zeros_like(p) for n, p in plain.named_parameters() if n in names}
    dcp.load(state, checkpoint_id=str(step), no_dist=True)
    assert state[names[1]].abs().sum() > 0   # the adapters trained
    assert export.main([str(tmp_path / "run"), str(tmp_path / "hf")]) == 0
    out = capsys.readouterr().out
    assert "builds the LLM unquantised" in out and "LoRA adapters of 4 LLM layers merged" in out
    hf = InstructBlipForConditionalGeneration.from_pretrained(str(tmp_path / "hf"))
    hf_q = next(p for n, p in hf.named_parameters() if n.endswith("layers.0.self_attn.q_proj.weight"))
    base = plain.llm.model.layers[0].self_attn.q_proj.base_layer.weight
    by_hand = base + lora["alpha"] / lora["r"] * state[names[1]] @ state[names[0]]
    torch.testing.assert_close(hf_q, by_hand, atol=1e-6, rtol=1e-6)

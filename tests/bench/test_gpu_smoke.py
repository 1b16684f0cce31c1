"""`bench/gpu.py --smoke` on CPU: every stage reports, an OOM in one stage is survived, the
import path stays free of omegaconf/iopath/webdataset (absent on the GPU machine), and the
documented FLOP formula matches torch's FLOP counter on the smoke model."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GPU = os.path.join(ROOT, "bench", "gpu.py")
STAGES = ["build", "train_b2_ckpt_off", "train_b4_ckpt_off", "train_b2_ckpt_on",
          "train_b4_ckpt_on", "generate_greedy", "generate_beam5", "ranking",
          "packing_sdpa", "packing_flex_attention", "packing_flash_attention_2",
          "quant_int8_weight_only", "quant_int8", "quant_nf4"]
# Run the script as on the GPU machine: these packages cannot be imported there.
BLOCKED = ("import runpy, sys\n"
           "for m in ('omegaconf', 'iopath', 'webdataset'): sys.modules[m] = None\n"
           "sys.argv = [{gpu!r}] + {args!r}\n"
           "runpy.run_path({gpu!r}, run_name='__main__')\n")


def _gpu_module():
    spec = importlib.util.spec_from_file_location("bench_gpu", GPU)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke_output() -> str:
    args = ["--smoke", "--simulate-oom", "train_b4_ckpt_off"]
    proc = subprocess.run([sys.executable, "-c", BLOCKED.format(gpu=GPU, args=args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=280,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _line(output: str, stage: str) -> str:
    found = [l for l in output.splitlines() if l.startswith(f"stage {stage}: ")]
    assert len(found) == 1, f"stage {stage} printed {len(found)} result lines:\n{output}"
    return found[0]


def test_every_stage_prints_a_result(smoke_output):
    assert "build" in _line(smoke_output, "build") and "trainable" in _line(smoke_output, "build")
    for stage in ("train_b2_ckpt_off", "train_b2_ckpt_on", "train_b4_ckpt_on"):
        line = _line(smoke_output, stage)
        assert re.search(r"[\d.]+ samples/s, \d+ ms/step, [\d.]+ TFLOP/s", line), line
        assert "loss" in line and "nan" not in line
    for stage in ("generate_greedy", "generate_beam5"):
        assert re.search(r"[\d.]+ tokens/s \(batch 2, 4 new tokens", _line(smoke_output, stage))
    ranking = _line(smoke_output, "ranking")
    assert re.search(r"speedup [\d.]+x", ranking), ranking
    diff = float(re.search(r"max \|score diff\| ([\d.e+-]+)", ranking).group(1))
    assert diff < 1e-3 and "top-1 agreement 100%" in ranking  # fp32 on CPU: same scores
    quant = _line(smoke_output, "quant_int8_weight_only")
    ratio = float(re.search(r"MiB \(([\d.]+)x\)", quant).group(1))
    assert "14 linear layers" in quant and ratio < 0.7, quant
    assert re.search(r"generate: [\d.]+ tokens/s", quant) and "GPU memory of the LLM n/a" in quant
    for mode in ("int8", "nf4"):   # bitsandbytes modes need CUDA: said, not failed
        assert _line(smoke_output, f"quant_{mode}") == f"stage quant_{mode}: skipped ({mode} needs CUDA (bitsandbytes))"
    packing = _line(smoke_output, "packing_sdpa")
    assert re.search(r"packed [\d.]+x vs padded", packing), packing
    positions = re.search(r"LLM positions (\d+) vs (\d+)", packing)
    assert int(positions.group(1)) < int(positions.group(2)), packing
    assert float(re.search(r"loss relative diff ([\d.e+-]+)", packing).group(1)) <= 1e-5
    assert "skipped (flex_attention compiles" in _line(smoke_output, "packing_flex_attention")
    if importlib.util.find_spec("flash_attn") is None:
        assert "skipped (the flash-attn package is not installed)" in _line(
            smoke_output, "packing_flash_attention_2")
    last = smoke_output.strip().splitlines()[-1]
    assert last.startswith("summary: 9/14 stages ok"), last


def test_oom_in_one_stage_is_reported_and_the_next_stages_run(smoke_output):
    line = _line(smoke_output, "train_b4_ckpt_off")
    assert "OOM (simulated out of memory" in line and "continuing" in line
    order = [l.split(":")[0] for l in smoke_output.splitlines() if l.startswith("stage ")]
    assert order == [f"stage {s}" for s in STAGES]


@pytest.mark.integration
def test_time_budget_skips_the_remaining_stages():
    proc = subprocess.run([sys.executable, "-c", BLOCKED.format(gpu=GPU, args=["--smoke", "--budget", "1"])],
                          capture_output=True, text=True, cwd=ROOT, timeout=200,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1, proc.stdout + proc.stderr   # nothing ran, not even the build
    assert "stage build: skipped (time budget" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith("summary: build failed")


@pytest.mark.parametrize("packing", ["false", "true"])
def test_flop_formula_matches_torch_flop_counter(packing):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    gpu = _gpu_module()
    torch.manual_seed(0)
    model = gpu.build_model(gpu.SPECS["smoke"], torch.device("cpu"), torch.float32)
    model.train()
    samples = gpu.train_batch(gpu.SPECS["smoke"], model, 3, torch.device("cpu"))
    samples["text_input"][1] += "xyz"  # ragged lengths: padded shapes or packed rows
    assert model.adapter.set_packing(packing) == (packing == "true")
    # The math backend runs attention as matmuls the counter sees (CPU flash kernels are
    # not counted); forward and backward matmuls are then counted exactly as executed.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(samples)["loss"].backward()
    measured, formula = counter.get_total_flops(), gpu.flops_per_step(model, samples)
    assert abs(formula - measured) <= 1e-9 * measured, (formula, measured)


def test_materialised_model_is_finite_with_real_rotary_buffers():
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    gpu = _gpu_module()
    model = gpu.build_model(gpu.SPECS["smoke"], torch.device("cpu"), torch.float32)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(p.device.type == "cpu" for p in model.parameters())
    rotary = model.llm.model.rotary_emb
    assert torch.equal(rotary.inv_freq, LlamaRotaryEmbedding(model.llm.config).inv_freq)
    for block in model.visual_encoder.blocks:
        assert torch.count_nonzero(block.attn.k_bias) == 0
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"query_tokens", "qformer", "ln_vision", "llm_proj"}

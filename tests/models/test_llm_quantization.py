"""Quantised frozen LLM (`model.llm_quantization`): the model (runs: test_llm_quantization_runs.py).

`int8_weight_only` (torchao) runs on CPU and is checked against the same model
unquantised: quantised layers, LLM logits, generation, ranking, a training step, weight
memory, loading from a Hugging Face directory. `int8` / `nf4` need bitsandbytes on CUDA;
here their refusals are checked (pre-flight and build time).
"""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from lavis_ib import load_model
from lavis_ib.common.errors import ConfigError
from lavis_ib.common.paths import package_path
from lavis_ib.models.llm import quantization as lq

MODE = "int8_weight_only"
TYPES = [("instructblip", "tiny_vicuna"), ("instructblip", "tiny_flant5"),
         ("instructblip", "tiny_opt"), ("blip2_opt", "tiny_opt")]
PROMPT = "what is in the photo?"
CANDIDATES = ["a cat on a mat", "dog", "two birds"]
#: ||logits - reference|| / ||reference||. The tiny T5 (encoder + decoder with
#: cross-attention) passes 32 int8 layers per position against 12-14 for the decoder-only
#: LLMs; each adds 0.2-0.5% (measured per layer group), and it sums to 1.2%.
LOGIT_TOLERANCE = {"t5": 0.015}


def _images(n=2, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def pairs():
    """(unquantised, quantised) per type; random_init_seed makes the weights identical."""
    return {}


def _pair(pairs, name, model_type):
    if (name, model_type) not in pairs:
        pairs[(name, model_type)] = (load_model(name, model_type, is_eval=True),
                                     load_model(name, model_type, is_eval=True,
                                                llm_quantization=MODE))
    return pairs[(name, model_type)]


def _llm_logits(model, images) -> torch.Tensor:
    """Every logit the LLM produces while ranking CANDIDATES (the model's real inputs:
    soft prompts, prompt tokens, candidate tries)."""
    got = []
    hook = model.llm.register_forward_hook(
        lambda module, args, kwargs, out: got.append(out.logits.detach()), with_kwargs=True)
    try:
        with torch.no_grad():
            model.score_candidates({"image": images, "prompt": PROMPT}, candidates=CANDIDATES)
    finally:
        hook.remove()
    return torch.cat([g.flatten() for g in got])


@pytest.mark.parametrize("name,model_type", TYPES)
def test_linear_layers_quantised_except_the_head(pairs, name, model_type):
    ref, quant = _pair(pairs, name, model_type)
    expected = [n for n, m in ref.llm.named_modules() if isinstance(m, nn.Linear)
                and n != "lm_head" and not n.endswith(".wo")]
    quantised = [n for n, m in quant.llm.named_modules()
                 if isinstance(m, nn.Linear) and type(m.weight) is not nn.Parameter]
    assert quantised == expected and len(expected) >= 10
    assert type(quant.llm.get_output_embeddings().weight) is nn.Parameter
    assert all(type(m.weight) is nn.Parameter for m in quant.llm.modules() if isinstance(m, nn.Embedding))
    assert quant.llm.get_submodule(expected[0]).weight.qdata.dtype == torch.int8
    report = quant.load_report["llm_quantization"]
    assert report["mode"] == MODE and report["quantized_linear_layers"] == len(expected)
    assert "lm_head" in report["kept_linear_layers"]
    # the ViT and the trainable parts are untouched
    assert all(type(p) is nn.Parameter for n, p in quant.named_parameters() if not n.startswith("llm."))


@pytest.mark.parametrize("name,model_type", TYPES)
def test_llm_logits_close_to_the_unquantised_model(pairs, name, model_type):
    ref, quant = _pair(pairs, name, model_type)
    images = _images()
    want, got = _llm_logits(ref, images), _llm_logits(quant, images)
    assert got.shape == want.shape and not torch.equal(got, want)   # it did quantise
    tolerance = LOGIT_TOLERANCE.get(ref.llm.config.model_type, 0.01)
    assert ((got - want).norm() / want.norm()).item() < tolerance
    scores, mask = quant.score_candidates({"image": images, "prompt": PROMPT}, candidates=CANDIDATES)
    ref_scores, _ = ref.score_candidates({"image": images, "prompt": PROMPT}, candidates=CANDIDATES)
    assert scores.shape == (2, 3) and bool(mask.all())
    torch.testing.assert_close(scores, ref_scores, rtol=0.01, atol=0.0)
    assert torch.equal(scores.argmax(1), ref_scores.argmax(1))
    answers = quant.generate({"image": images, "prompt": PROMPT}, num_beams=2, max_length=5)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


@pytest.mark.parametrize("name,model_type", TYPES)
def test_training_step_reaches_only_the_trainable_fp32_parts(pairs, name, model_type):
    """A step under bf16 autocast (the run test below trains with amp none)."""
    _, quant = _pair(pairs, name, model_type)
    frozen = {n: p.detach().clone() for n, p in quant.named_parameters() if not p.requires_grad}
    trainable = dict(quant.trainable_parameters())
    assert trainable and all(p.dtype == torch.float32 for p in trainable.values())
    before = {n: p.detach().clone() for n, p in trainable.items()}
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-3)
    quant.train()
    try:
        batch = {"image": _images(), "text_input": ["what is this?", "count"],
                 "text_output": ["a small cat", "3"]}
        with torch.autocast("cpu", dtype=torch.bfloat16):   # the runner's default amp
            loss = quant(batch)["loss"]
        loss.backward()
        for n, p in quant.named_parameters():
            assert (p.grad is not None) == (n in trainable), n
        optimizer.step()
    finally:
        quant.zero_grad(set_to_none=True)
        quant.eval()
    assert all(p.dtype == torch.float32 for p in trainable.values())
    assert any(not torch.equal(trainable[n], before[n]) for n in trainable)
    params = dict(quant.named_parameters())
    for n, p in frozen.items():
        assert _same(params[n], p), n


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit equality, of the int8 data and scales for quantised weights."""
    if hasattr(a, "qdata"):
        return torch.equal(a.qdata, b.qdata) and torch.equal(a.scale, b.scale)
    return torch.equal(a, b)


@pytest.mark.parametrize("name,model_type", TYPES[:2])
def test_weight_memory_drops_by_the_int8_layout(pairs, name, model_type):
    """Expected bytes from the layer shapes alone: each quantised (out, in) fp32 weight
    becomes out*in int8 values plus one fp32 scale per output channel, and at most 8 more
    bytes per channel of metadata (torchao 0.18 also keeps an int8 zero point)."""
    ref, quant = _pair(pairs, name, model_type)
    saved = channels = 0
    for layer_name in lq.quantized_linear_names(ref.llm):
        out_f, in_f = ref.llm.get_submodule(layer_name).weight.shape
        saved += out_f * in_f * 4 - (out_f * in_f + out_f * 4)
        channels += out_f
    before = sum(p.numel() * 4 for p in ref.llm.parameters()) + sum(
        b.numel() * b.element_size() for b in ref.llm.buffers())
    assert lq.weight_bytes(ref.llm) == before
    after = lq.weight_bytes(quant.llm)
    assert before - saved <= after <= before - saved + 8 * channels
    report = quant.load_report["llm_quantization"]
    assert (report["llm_weight_bytes_before"], report["llm_weight_bytes_after"]) == (before, after)
    assert after < 0.7 * before


def test_log_line_names_the_count(caplog):
    with caplog.at_level(logging.INFO, logger=lq.__name__):
        load_model("blip2_t5", "tiny_flant5", is_eval=True, llm_quantization=MODE)
    lines = [r.getMessage() for r in caplog.records if r.name == lq.__name__]
    assert len(lines) == 1
    assert "int8_weight_only: 32 linear layers of the LLM quantised" in lines[0]
    assert "kept unquantised:" in lines[0] and "lm_head" in lines[0] and ".wo" in lines[0]


def test_pretrained_directory_loads_quantised(hf_dirs):
    """A directory transformers wrote (the session's, shared with the parity tests)."""
    directory = hf_dirs["llama"]
    ref = load_model("instructblip", "tiny_vicuna", is_eval=True, pretrained=directory)
    quant = load_model("instructblip", "tiny_vicuna", is_eval=True, pretrained=directory,
                       llm_quantization=MODE)
    assert quant.load_report["pretrained"] and quant.load_report["llm_quantization"]["quantized_linear_layers"] == 14
    images = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    want, got = _llm_logits(ref, images), _llm_logits(quant, images)
    assert not torch.equal(got, want)
    assert ((got - want).norm() / want.norm()).item() < 0.01


def test_state_dict_trainable_part_is_plain_and_reloads(pairs):
    ref, quant = _pair(pairs, "instructblip", "tiny_vicuna")
    trainable = {n for n, _ in quant.trainable_parameters()}
    state = {k: v for k, v in quant.state_dict().items() if k in trainable}
    assert state and all(type(v) is torch.Tensor for v in state.values())
    fresh = load_model("instructblip", "tiny_vicuna", is_eval=True, llm_quantization=MODE,
                       random_init_seed=5)
    result = fresh.load_state_dict(state, strict=False)
    assert not result.unexpected_keys and not set(result.missing_keys) & trainable
    assert all(torch.equal(dict(fresh.named_parameters())[n], quant.state_dict()[n]) for n in trainable)


# -- refusals ---------------------------------------------------------------------------
def test_unknown_mode_lists_the_modes():
    problems = lq.quantization_problems({"llm_quantization": "int4"}, {})
    assert problems == ["model.llm_quantization: 'int4' is not one of none, int8, nf4, int8_weight_only."]
    with pytest.raises(ConfigError, match="not one of none, int8, nf4, int8_weight_only"):
        load_model("instructblip", "tiny_vicuna", llm_quantization="int4")


@pytest.mark.parametrize("mode", ["int8", "nf4"])
def test_bitsandbytes_modes_refused_without_cuda(mode, monkeypatch):
    problems = " ".join(lq.quantization_problems({"llm_quantization": mode, "llm_precision": "bf16"},
                                                 {"device": "cpu"}))
    assert "needs bitsandbytes on a CUDA GPU but run.device is cpu" in problems
    assert "use llm_quantization=int8_weight_only" in problems
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    problems = " ".join(lq.quantization_problems({"llm_quantization": mode}, {"device": "auto"}))
    assert "no CUDA device is visible" in problems
    with pytest.raises(ConfigError, match=f"'{mode}' needs bitsandbytes"):
        load_model("instructblip", "tiny_vicuna", llm_quantization=mode, llm_precision="bf16")


def test_bitsandbytes_missing_and_precision_refused(monkeypatch):
    import importlib.util

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "bitsandbytes" else real_find_spec(n, *a))
    problems = lq.quantization_problems({"llm_quantization": "nf4", "llm_precision": "bf16"},
                                        {"device": "cuda"})
    assert problems == ["model.llm_quantization: 'nf4' needs bitsandbytes, which is not "
                        "installed; pip install 'lavis_ib[quantization]' (Linux with CUDA)."]
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object())
    assert lq.quantization_problems({"llm_quantization": "nf4"}, {"device": "cuda"}) == []
    problems = lq.quantization_problems({"llm_quantization": "int8", "llm_precision": "fp32"},
                                        {"device": "cuda"})
    assert len(problems) == 1 and "set model.llm_precision=bf16 or fp16" in problems[0]


def test_torchao_version_checked(monkeypatch):
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.14.1")
    assert lq.quantization_problems({"llm_quantization": MODE}, {}) == [
        "model.llm_quantization: 'int8_weight_only' needs torchao>=0.15; found 0.14.1; "
        "pip install 'lavis_ib[quantization]'."]


def test_preflight_reports_quantization_with_the_run():
    """Through the real pre-flight of a project: FSDP refused, DDP and none accepted."""
    from lavis_ib.cli.preflight import checked_config

    demo = package_path("configs/projects/instructblip/demo_tiny.yaml")
    with pytest.raises(ConfigError) as info:
        checked_config(demo, ["model.llm_quantization=int8_weight_only", "run.distributed=fsdp"])
    assert ("model.llm_quantization: 'int8_weight_only' cannot be used with "
            "run.distributed=fsdp") in str(info.value)
    with pytest.raises(ConfigError) as info:
        checked_config(demo, ["model.llm_quantization=nf4", "run.device=cpu"])
    assert "'nf4' needs bitsandbytes on a CUDA GPU but run.device is cpu" in str(info.value)
    for distributed in ("none", "ddp"):
        assert lq.quantization_problems({"llm_quantization": MODE},
                                        {"distributed": distributed, "device": "cpu"}) == []

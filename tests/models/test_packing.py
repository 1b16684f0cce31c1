"""Packed training micro-batches (`run.packing`) for decoder-only LLMs.

The reference is the padded layout (left-padded rows, 2-D mask), itself checked against
transformers' own model in test_hf_parity / bench/train_step.py: packed and padded steps
must give the same loss (fp32, relative 1e-6) and the same gradient of every trainable
parameter (relative 1e-5), on one row and on several rows, with LoRA adapters and with an
int8 (torchao) LLM. The per-family self-check passes for LLaMA, Mistral and Qwen2 and
fails for OPT (whose mask ignores position ids); a packed LLM call never sees a 2-D
mask or a cache.
"""
from __future__ import annotations

import pytest
import torch

from lavis_ib import load_model
from lavis_ib.common.errors import ConfigError
from lavis_ib.models.llm.packing import pack_sequences, packs_exactly, plan_rows

PROMPTS = ["what is this?", "count the cats in the picture, then say how many there are",
           "a", "Describe the image in detail, please, with every object you see.", "ocr?"]
TARGETS = ["a small cat", "3", "two dogs and a long red bus next to a tree on a sunny day",
           "yes", ""]


def _batch(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 3, 32, 32, generator=g),
            "text_input": PROMPTS[:n], "text_output": TARGETS[:n]}


def _step(model, packing: str, samples) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss, gradients of every trainable parameter) of one forward/backward."""
    model.adapter.set_packing(packing)
    model.zero_grad(set_to_none=True)
    loss = model(samples)["loss"]
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()
             if p.requires_grad and p.grad is not None}
    return loss.detach(), grads


def assert_same_step(model, samples, row_tokens=None):
    if row_tokens is not None:
        model.adapter.row_tokens = row_tokens
    loss_pad, grads_pad = _step(model, "false", samples)
    padded_positions = model.adapter.last_llm_positions
    loss_pack, grads_pack = _step(model, "true", samples)
    assert model.adapter.last_llm_positions < padded_positions
    assert abs(loss_pack.item() - loss_pad.item()) <= 1e-6 * abs(loss_pad.item())
    assert set(grads_pack) == set(grads_pad) and grads_pad
    # a key bias's gradient is zero up to rounding (softmax ignores a shift): its
    # relative difference is measured against 1e-6 of the largest gradient instead
    floor = 1e-6 * max(g.norm() for g in grads_pad.values())
    for name, want in grads_pad.items():
        scale = torch.maximum(want.norm(), floor)
        assert (grads_pack[name] - want).norm() / scale <= 1e-5, name
    return grads_pad


@pytest.fixture(scope="module")
def vicuna():
    torch.manual_seed(0)
    return load_model("instructblip", "tiny_vicuna").eval()


def test_plan_rows_keeps_every_sample_once_within_the_cap():
    lengths = [40, 7, 33, 12, 60, 5, 5, 21]
    rows = plan_rows(lengths, cap=64)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 64 for row in rows)
    assert len(rows) == 3   # 183 positions, first fit decreasing: 60+..., 40+21, 33+12+...
    assert plan_rows([90, 10], cap=16) == [[0], [1]]   # never below the longest: 90
    assert plan_rows([9, 10], cap=1) == [[1], [0]]


def test_pack_sequences_layout():
    prefix = torch.arange(2 * 2 * 1, dtype=torch.float32).reshape(2, 2, 1)
    prompts, targets = [[5, 6], [7]], [[8], [9, 10]]
    embeds = [torch.full((3, 1), 100.0), torch.full((3, 1), 200.0)]
    rows = pack_sequences(prefix, embeds, prompts, targets, cap=64)
    assert rows.rows == [[0, 1]]
    assert rows.positions.tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 3, 4]]
    assert rows.embeds[0, :, 0].tolist() == [0, 1, 100, 100, 100, 2, 3, 200, 200, 200]
    # target 8 sits at column 4 (predicted by column 3); 9, 10 at 8, 9 (by 7, 8)
    assert rows.target_cols.tolist() == [3, 7, 8] and rows.target_ids.tolist() == [8, 9, 10]
    split = pack_sequences(prefix, embeds, prompts, targets, cap=1)
    assert split.rows == [[0], [1]] and split.positions.tolist() == [[0, 1, 2, 3, 4]] * 2


@pytest.mark.parametrize("family", ["tiny_vicuna", "tiny_mistral", "tiny_qwen2"])
def test_self_check_passes_for_llama_mistral_qwen2(family):
    llm = load_model("blip2_llm", family).llm
    ok, why = packs_exactly(llm)
    assert ok, why


def test_self_check_fails_for_opt_and_encoder_decoder_stays_padded(tiny_opt, tiny_flant5):
    ok, why = packs_exactly(tiny_opt.llm)
    assert not ok and "differ" in why
    assert not tiny_opt.adapter.set_packing("auto")
    with pytest.raises(ConfigError, match="run.packing is true but the LLM \\(opt\\)"):
        tiny_opt.adapter.set_packing("true")
    tiny_opt.adapter.set_packing("auto")
    assert packs_exactly(tiny_flant5.llm) == (False, "encoder-decoder LLMs stay padded")
    assert tiny_flant5.set_packing("auto") is False
    with pytest.raises(ConfigError, match="encoder-decoder"):
        tiny_flant5.set_packing(True)


def test_run_packing_values():
    from lavis_ib.common.schema import validate_run

    assert validate_run({}).packing == "auto"
    assert validate_run({"packing": False}).packing == "false"
    assert validate_run({"packing": True}).packing == "true"
    with pytest.raises(ConfigError, match="run.packing: 'yes' is not one of auto, true, false"):
        validate_run({"packing": "yes"})


@pytest.mark.parametrize("row_tokens", [1024, 1], ids=["one_row", "a_row_per_sample_mostly"])
def test_packed_equals_padded_loss_and_every_gradient(vicuna, row_tokens):
    try:
        grads = assert_same_step(vicuna, _batch(), row_tokens=row_tokens)
    finally:
        vicuna.adapter.row_tokens = 1024
    assert {n.split(".")[0] for n in grads} >= {"query_tokens", "qformer", "llm_proj"}


def test_a_packed_llm_call_never_sees_a_mask_or_a_cache(vicuna, monkeypatch):
    calls = []
    forward = vicuna.llm.forward

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return forward(*args, **kwargs)

    monkeypatch.setattr(vicuna.llm, "forward", spy)
    vicuna.adapter.set_packing("auto")
    vicuna(_batch())
    assert len(calls) == 1
    kwargs = calls[0]
    assert kwargs["attention_mask"] is None and kwargs["use_cache"] is False
    assert kwargs.get("past_key_values") is None and kwargs.get("cache") is None
    positions = kwargs["position_ids"]
    assert positions.shape[0] == 1 and (positions[0, 1:] - positions[0, :-1] != 1).sum() == 4


@pytest.mark.parametrize("family", ["tiny_mistral", "tiny_qwen2"])
def test_packed_equals_padded_on_mistral_and_qwen2(family):
    torch.manual_seed(0)
    model = load_model("blip2_llm", family).eval()
    assert_same_step(model, _batch())


def test_packed_equals_padded_with_lora_adapters():
    torch.manual_seed(0)
    model = load_model("instructblip", "tiny_vicuna",
                       llm_lora={"r": 4, "alpha": 8, "dropout": 0.0}).eval()
    with torch.no_grad():   # B starts at zero: give the adapters an effect and A a gradient
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.1)
    grads = assert_same_step(model, _batch())
    assert any(".lora_A." in n for n in grads) and any(".lora_B." in n for n in grads)


def test_packed_equals_padded_on_an_int8_llm():
    pytest.importorskip("torchao", reason="the CPU quantisation path is torchao's int8")
    torch.manual_seed(0)
    model = load_model("instructblip", "tiny_vicuna", llm_quantization="int8_weight_only").eval()
    assert_same_step(model, _batch())

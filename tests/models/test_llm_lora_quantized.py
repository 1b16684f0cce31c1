"""LoRA adapters on a torchao `int8_weight_only` LLM (QLoRA-style on CPU): the adapters
wrap the int8 layers and train, the int8 base never changes, DDP is told to leave the
renamed int8 weights alone, merging into int8 is refused, and adapters trained on the int8
base carry over to the unquantised LLM that export builds (the reference: the same
unquantised model with the same adapters, unmerged)."""
from __future__ import annotations

import pytest
import torch

from lavis_ib import load_model
from lavis_ib.common.errors import LavisIbError
from lavis_ib.models.llm.quantization import is_quantized

LORA = {"r": 4, "alpha": 8}
QUANT = "int8_weight_only"


def _batch(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 3, 32, 32, generator=g),
            "text_input": ["what is this?", "count the cats"][:n],
            "text_output": ["a small cat", "3"][:n]}


@pytest.fixture(scope="module")
def trained():
    """tiny_vicuna, int8 LLM + adapters, after three AdamW steps on one batch: (model,
    its int8 base weights before training)."""
    torch.manual_seed(0)
    model = load_model("instructblip", "tiny_vicuna", llm_quantization=QUANT, llm_lora=LORA)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if is_quantized(p)}
    optimizer = torch.optim.AdamW([p for _, p in model.trainable_parameters()], lr=1e-2)
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        model(_batch())["loss"].backward()
        optimizer.step()
    return model.eval(), base


def test_adapters_wrap_the_int8_layers_and_start_as_identity():
    quantised = load_model("instructblip", "tiny_vicuna", is_eval=True, llm_quantization=QUANT)
    adapted = load_model("instructblip", "tiny_vicuna", is_eval=True, llm_quantization=QUANT,
                         llm_lora=LORA)
    q_proj = adapted.llm.model.layers[0].self_attn.q_proj
    assert is_quantized(q_proj.get_base_layer().weight)
    assert q_proj.lora_A["default"].weight.dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(quantised(_batch())["loss"], adapted(_batch())["loss"])


def test_training_moves_the_adapters_and_never_the_int8_base(trained):
    model, base = trained
    trainable = dict(model.trainable_parameters())
    assert any(".lora_B." in n for n in trainable)
    assert all(not n.startswith("llm.") or ".lora_" in n for n in trainable)
    assert all(p.dtype == torch.float32 for p in trainable.values())
    moved = [n for n, p in trainable.items() if ".lora_B." in n and p.abs().sum() > 0]
    assert moved, "the adapters did not train"
    for name, p in model.named_parameters():
        if name in base:
            assert not p.requires_grad and p.grad is None, name
            assert torch.equal(p.dequantize(), base[name].dequantize()), name


def test_ddp_ignores_the_int8_weights_under_their_wrapped_names(trained):
    model, base = trained
    ignored = set(model._ddp_params_and_buffers_to_ignore)
    assert ignored == set(base)   # every int8 weight, no stale pre-LoRA name
    assert any(".base_layer.weight" in n for n in ignored)
    assert ignored <= dict(model.named_parameters()).keys()


def test_merging_into_int8_is_refused(trained):
    model, _ = trained
    with pytest.raises(LavisIbError, match="llm_quantization: none"):
        model.merge_adapters()
    assert any(".lora_A." in n for n, _ in model.named_parameters())   # nothing half-merged


def test_adapters_trained_on_int8_carry_over_to_the_unquantised_llm(trained):
    """What `lavis-ib export` does: build unquantised, load the run's trainable weights,
    merge. The merged model equals the unquantised one with the adapters unmerged, and
    stays close to the int8 model they were trained on."""
    model, _ = trained
    state = {n: p.detach() for n, p in model.trainable_parameters()}
    plain = load_model("instructblip", "tiny_vicuna", is_eval=True, llm_lora=LORA)
    missing = set(state) - dict(plain.named_parameters()).keys()
    assert not missing
    plain.load_state_dict(state, strict=False)
    with torch.no_grad():
        int8_loss = model(_batch())["loss"]
        unmerged = plain(_batch())["loss"]
        assert plain.merge_adapters() == 4
        merged = plain(_batch())["loss"]
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)
    assert abs(merged - int8_loss) / int8_loss < 0.01


def test_ddp_wraps_the_adapted_int8_model(tmp_path):
    """Without the renamed ignore list DDP would try to bucket the int8 base weights."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    model = load_model("instructblip", "tiny_vicuna", llm_quantization=QUANT, llm_lora=LORA)
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0,
                            world_size=1)
    try:
        wrapped = DistributedDataParallel(model, find_unused_parameters=True)
        model.train()
        wrapped(_batch())["loss"].backward()
        adapter_grads = [p.grad for n, p in model.named_parameters() if ".lora_A." in n]
        assert adapter_grads and all(g is not None for g in adapter_grads)
        del wrapped
    finally:
        dist.destroy_process_group()

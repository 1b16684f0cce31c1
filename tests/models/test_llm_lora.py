"""LoRA adapters on the LLM (`model.llm_lora`): the checks before building, the target
modules, identity at the start, what gets gradients, dtypes, train/eval mode, FSDP units
and merging (the merged LLM computes what the adapted one did)."""
from __future__ import annotations

import pytest
import torch

from lavis_ib import load_model
from lavis_ib.common.errors import ConfigError
from lavis_ib.models.llm.lora import lora_problems

LORA = {"r": 4, "alpha": 8}


def _batch(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 3, 32, 32, generator=g),
            "text_input": ["what is this?", "count the cats"][:n],
            "text_output": ["a small cat", "3"][:n]}


def _randomise_b(model, seed=1):
    """LoRA starts as the identity (B = 0); give B values so the adapters do something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


@pytest.mark.parametrize("settings, fragment", [
    ({"r": 4, "alhpa": 8}, "unknown key 'alhpa'. Did you mean 'alpha'?"),
    ({"r": 0}, "r must be an integer >= 1"),
    ({"r": 2.5}, "r must be an integer >= 1"),
    ({"r": 4, "alpha": 0}, "alpha must be a number > 0"),
    ({"r": 4, "dropout": 1.0}, "dropout must be in [0, 1)"),
    ({"r": 4, "target_modules": []}, "non-empty list of module names"),
    ({"r": 4, "target_modules": "q_proj"}, "non-empty list of module names"),
    ({}, "empty mapping"),
    (8, "must be a mapping"),
])
def test_bad_settings_are_named_before_building(settings, fragment):
    problems = lora_problems({"llm_lora": settings}, None)
    assert len(problems) == 1 and fragment in problems[0], problems


def test_good_settings_and_off_have_no_problems():
    assert lora_problems({"llm_lora": None}, None) == []
    assert lora_problems({}, None) == []
    full = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj"]}
    assert lora_problems({"llm_lora": full}, {"distributed": "fsdp"}) == []


@pytest.mark.parametrize("mode", ["int8", "nf4"])
def test_lora_with_bitsandbytes_quantisation_is_refused(mode):
    problems = lora_problems({"llm_lora": LORA, "llm_quantization": mode}, None)
    assert len(problems) == 1 and f"llm_quantization='{mode}' (bitsandbytes)" in problems[0]
    assert lora_problems({"llm_lora": LORA, "llm_quantization": "int8_weight_only"}, None) == []


def test_preflight_reports_lora_problems():
    from lavis_ib.common.config import Config
    from lavis_ib.common.paths import package_path
    from lavis_ib.cli.preflight import config_problems

    cfg = Config(package_path("configs/projects/instructblip/demo_tiny.yaml"),
                 ["model.llm_lora={r: 0}"])
    assert any("model.llm_lora.r must be an integer >= 1" in p
               for p in config_problems(cfg, training=True))


def test_missing_target_module_names_the_available_layers():
    with pytest.raises(ConfigError) as info:
        load_model("instructblip", "tiny_opt", llm_lora={"r": 2, "target_modules": ["q_prj"]})
    text = str(info.value)
    assert "no linear layer 'q_prj'" in text and "Did you mean 'q_proj'?" in text
    assert "fc1" in text and "out_proj" in text


@pytest.mark.parametrize("model_type, wrapped", [
    ("tiny_vicuna", ["q_proj", "v_proj"]), ("tiny_flant5", ["q", "v"])])
def test_family_default_targets(model_type, wrapped):
    model = load_model("instructblip", model_type, llm_lora={"r": 2})
    names = {n.rsplit(".", 1)[-1] for n in model.trainable_module_names() if n.startswith("llm.")}
    assert names == set(wrapped)
    assert model.llm_lora_settings == {"r": 2, "alpha": 4.0, "dropout": 0.0,
                                       "target_modules": wrapped}


@pytest.mark.parametrize("model_type", ["tiny_vicuna", "tiny_flant5", "tiny_opt"])
def test_fresh_adapters_are_the_identity(model_type):
    plain = load_model("instructblip", model_type, is_eval=True)
    adapted = load_model("instructblip", model_type, is_eval=True, llm_lora=LORA)
    with torch.no_grad():
        assert torch.equal(plain(_batch())["loss"], adapted(_batch())["loss"])
    # nothing but the adapters was added: every other weight is the same draw
    plain_state = plain.state_dict()
    for name, value in adapted.state_dict().items():
        if ".lora_" not in name:
            assert torch.equal(value, plain_state[name.replace(".base_layer", "")]), name


def test_saving_unmerged_adapters_is_refused(tmp_path):
    from lavis_ib.common.errors import LavisIbError

    model = load_model("instructblip", "tiny_opt", llm_lora=LORA)
    with pytest.raises(LavisIbError, match="call model.merge_adapters"):
        model.save_pretrained(str(tmp_path / "hf"))
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("model_type", ["tiny_vicuna", "tiny_flant5"])
def test_gradients_reach_only_the_qformer_side_and_the_adapters(model_type):
    model = load_model("instructblip", model_type, llm_lora=LORA)
    _randomise_b(model)  # with B = 0, A's gradient is 0 too
    model.train()
    model(_batch())["loss_sum"].backward()
    trainable = dict(model.trainable_parameters())
    parts = {n.split(".")[0] for n in trainable if not n.startswith("llm.")}
    assert parts == {"query_tokens", "qformer", "ln_vision", "llm_proj"}
    adapters = [n for n in trainable if n.startswith("llm.")]
    assert adapters and all(".lora_A." in n or ".lora_B." in n for n in adapters)
    for name, p in model.named_parameters():
        if name not in trainable:
            assert not p.requires_grad and p.grad is None, name
    assert model.query_tokens.grad.abs().sum() > 0
    for name in adapters:
        assert trainable[name].grad.abs().sum() > 0, name


def test_adapters_stay_fp32_on_a_bf16_llm():
    model = load_model("instructblip", "tiny_opt", llm_precision="bf16", llm_lora=LORA)
    dtypes = {n: p.dtype for n, p in model.llm.named_parameters()}
    assert {d for n, d in dtypes.items() if ".lora_" in n} == {torch.float32}
    assert {d for n, d in dtypes.items() if ".lora_" not in n} == {torch.bfloat16}
    _randomise_b(model)
    model.train()
    model(_batch())["loss_sum"].backward()
    assert all(p.grad.dtype == torch.float32 for n, p in model.llm.named_parameters()
               if ".lora_" in n)


def test_adapter_dropout_follows_train_mode_and_the_llm_stays_in_eval():
    model = load_model("instructblip", "tiny_opt", llm_lora={**LORA, "dropout": 0.1},
                       llm_train_mode="eval")
    model.train()
    dropouts = [m for n, m in model.llm.named_modules() if n.endswith("lora_dropout.default")]
    assert dropouts and all(m.training for m in dropouts)
    others = [m for n, m in model.llm.named_modules() if "lora_dropout" not in n]
    assert not any(m.training for m in others)
    model.eval()
    assert not any(m.training for m in model.llm.modules())


def test_fsdp_units_keep_adapters_apart_from_their_blocks():
    model = load_model("instructblip", "tiny_opt", llm_precision="bf16", llm_lora=LORA)
    units = model.shard_units()
    blocks = model._llm_blocks()
    adapters = [u for u in units if not any(u is b for b in blocks)
                and any(".lora_" in n for n, _ in model.named_modules() if _ is u)]
    assert len(adapters) == 2 * 2 * 2  # 2 layers x (q_proj, v_proj) x (lora_A, lora_B)
    first_block = next(i for i, u in enumerate(units) if any(u is b for b in blocks))
    assert max(units.index(a) for a in adapters) < first_block  # sharded before the blocks
    for unit in adapters:
        assert {p.dtype for p in unit.parameters()} == {torch.float32}


# (2 layers x q, v) for LLaMA; T5: 2 encoder layers x (q, v) + 2 decoder layers x
# (self-attention and cross-attention) x (q, v)
@pytest.mark.parametrize("model_type, layers", [("tiny_vicuna", 4), ("tiny_flant5", 12)])
def test_merging_keeps_the_outputs_and_restores_the_llm_names(model_type, layers):
    plain = load_model("instructblip", model_type, is_eval=True)
    model = load_model("instructblip", model_type, is_eval=True, llm_lora=LORA)
    _randomise_b(model)
    with torch.no_grad():
        adapted = model(_batch())["loss"]
        assert not torch.allclose(adapted, plain(_batch())["loss"])  # the adapters matter
        assert model.merge_adapters() == layers
        merged = model(_batch())["loss"]
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=1e-5)
    assert list(model.state_dict()) == list(plain.state_dict())
    assert not any(p.requires_grad for p in model.llm.parameters())
    assert model.merge_adapters() == 0


def test_export_builds_a_quantised_run_unquantised(capsys):
    from omegaconf import OmegaConf

    from lavis_ib.cli.export import unquantised

    node = OmegaConf.create({"arch": "instructblip", "model_type": "vicuna7b",
                             "llm_quantization": "int8", "llm_precision": "bf16"})
    plain = unquantised(node)
    assert plain.llm_quantization == "none" and plain.llm_precision == "bf16"
    assert node.llm_quantization == "int8"  # the run's own config is left as it was
    assert "builds the LLM unquantised" in capsys.readouterr().out
    untouched = OmegaConf.create({"arch": "instructblip", "llm_quantization": "none"})
    assert unquantised(untouched) is untouched

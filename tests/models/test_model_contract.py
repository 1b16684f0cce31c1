"""The model contract (`BaseModel`): documented defaults, and what InstructBLIP declares.

Tasks, runners and loaders call only these members, so each must exist on every model
with a sensible default; InstructBLIP's values (family, EOS default, generation
settings) are what evaluation settings are keyed and checked by.
"""
from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from lavis_ib.common.errors import LavisIbError
from lavis_ib.models import BaseModel, InstructBLIP


class Bare(BaseModel):
    """A model that implements nothing beyond its parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(2, 2)
        self.frozen = nn.Linear(2, 2).requires_grad_(False)


class Generator(BaseModel):
    def generate(self, samples, num_beams: int = 1, *, max_length: int = 5, **extra):
        return ["x"] * len(samples["image"])


def test_base_defaults():
    model = Bare()
    assert model.llm_family == "generic" and model.default_append_eos is False
    assert model.shard_units() == [] and model.checkpoint_units() == []
    assert model.trainable_module_names() == ["body"]
    assert [n for n, _ in model.trainable_parameters()] == ["body.weight", "body.bias"]
    default = {"vis_processor": {"eval": {"name": "blip_image_eval"}}}
    assert model.preprocess_config(default) is default
    with pytest.raises(LavisIbError, match="Bare has no export format"):
        model.save_pretrained("/nonexistent")
    with pytest.raises(LavisIbError, match="Bare does not generate"):
        model.generate({"image": torch.zeros(1)})
    with pytest.raises(LavisIbError, match="Bare does not rank"):
        model.score_candidates({"image": torch.zeros(1)}, ["a"])
    with pytest.raises(NotImplementedError, match="Bare must implement forward"):
        model({"image": torch.zeros(1)})
    assert Bare.generation_settings() == frozenset()


def test_generation_settings_are_the_generate_keywords():
    assert Generator.generation_settings() == {"num_beams", "max_length"}
    params = inspect.signature(InstructBLIP.generate).parameters
    expected = {name for name in params if name not in ("self", "samples", "stream")}
    assert InstructBLIP.generation_settings() == expected
    assert {"num_beams", "max_length", "min_length", "length_penalty",
            "repetition_penalty"} <= InstructBLIP.generation_settings()


def test_dead_members_are_gone():
    assert "frozen_units" not in vars(InstructBLIP) and "num_parameters" not in vars(BaseModel)


@pytest.mark.parametrize("fixture, family, append_eos", [
    ("tiny_vicuna", "vicuna", False), ("tiny_flant5", "flant5", True), ("tiny_opt", "opt", False)])
def test_llm_family_and_default_append_eos(fixture, family, append_eos, request):
    model = request.getfixturevalue(fixture)
    assert model.llm_family == family and model.default_append_eos is append_eos
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    samples, cands = {"image": images, "prompt": "q?"}, ["yes", "no", "a red car"]
    default, _ = model.score_candidates(samples, cands)
    explicit, _ = model.score_candidates(samples, cands, append_eos=append_eos)
    other, _ = model.score_candidates(samples, cands, append_eos=not append_eos)
    assert torch.equal(default, explicit) and not torch.allclose(default, other)


def test_another_decoder_only_llm_is_its_model_type(tiny_opt, monkeypatch):
    monkeypatch.setattr(tiny_opt.llm.config, "model_type", "mistral")
    assert tiny_opt.llm_family == "mistral" and tiny_opt.default_append_eos is False


def test_tiny_opt_trains_and_shards_like_the_others(tiny_opt):
    """OPT's decoder blocks are the LLM's shard and activation-checkpointing units, and
    the loss reaches the trainable parts only."""
    blocks = tiny_opt.checkpoint_units()
    assert len(blocks) == 2 and all(type(b).__name__ == "OPTDecoderLayer" for b in blocks)
    assert set(map(id, blocks)) <= set(map(id, tiny_opt.shard_units()))
    batch = {"image": torch.randn(2, 3, 32, 32), "text_input": ["what is it?", "and this?"],
             "text_output": ["a cat", "two dogs on a mat"]}
    out = tiny_opt(batch)
    assert set(out) == {"loss", "loss_sum", "num_tokens"}
    out["loss_sum"].backward()
    grads = {n.split(".")[0] for n, p in tiny_opt.named_parameters() if p.grad is not None}
    assert grads == {"query_tokens", "qformer", "ln_vision", "llm_proj"}
    tiny_opt.zero_grad(set_to_none=True)

"""`pretrained=` directories: sharded weights, incomplete checkpoints, preprocessing."""
from __future__ import annotations

import glob
import os
import shutil

import pytest
import torch

from lavis_ib import load_model, load_model_and_preprocess
from lavis_ib.common.errors import LavisIbError
from tests.models.conftest import IMAGE, MEAN, STD


def test_sharded_checkpoint_loads_shard_by_shard(hf_models, our_models, tmp_path):
    hf, processor = hf_models["llama"]
    d = str(tmp_path / "sharded")
    hf.save_pretrained(d, max_shard_size="40KB")
    processor.save_pretrained(d)
    assert len(glob.glob(os.path.join(d, "*.safetensors"))) > 2
    model = load_model("instructblip", "tiny_vicuna", pretrained=d)
    ref = our_models["llama"][0]
    for (name, a), (_, b) in zip(ref.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), name
    assert not model.load_report["pretrained"].missing


def test_incomplete_checkpoint_is_an_error(hf_dirs, tmp_path):
    from safetensors.torch import load_file, save_file

    d = str(tmp_path / "incomplete")
    shutil.copytree(hf_dirs["llama"], d)
    state = load_file(os.path.join(d, "model.safetensors"))
    del state["query_tokens"]
    save_file(state, os.path.join(d, "model.safetensors"))
    with pytest.raises(LavisIbError, match="query_tokens"):
        load_model("instructblip", "tiny_vicuna", pretrained=d)
    os.remove(os.path.join(d, "config.json"))
    with pytest.raises(LavisIbError, match="config.json"):
        load_model("instructblip", "tiny_vicuna", pretrained=d)


def test_preprocess_settings_come_from_the_directory(our_models, hf_dirs):
    _, vis, txt = our_models["llama"]
    for split in ("train", "eval"):
        assert vis[split].image_size == IMAGE
        assert list(vis[split].mean) == MEAN and list(vis[split].std) == STD
    assert txt["eval"] is not None
    # without pretrained=, the model type's own settings stay
    _, vis_default, _ = load_model_and_preprocess("instructblip", "tiny_vicuna")
    assert vis_default["eval"].image_size == 32 and list(vis_default["eval"].mean) != MEAN


def test_separate_lm_head_is_untied_like_transformers(hf_dirs, tmp_path):
    """FlanT5 checkpoints hold an lm_head apart from the shared embedding; transformers
    unties them on loading and so must we."""
    from safetensors.torch import load_file, save_file
    from transformers import InstructBlipForConditionalGeneration

    d = str(tmp_path / "untied")
    shutil.copytree(hf_dirs["t5"], d)
    state = load_file(os.path.join(d, "model.safetensors"))
    assert "language_model.lm_head.weight" not in state
    state["language_model.lm_head.weight"] = torch.randn_like(state["language_model.shared.weight"]) * 0.05
    save_file(state, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    hf = InstructBlipForConditionalGeneration.from_pretrained(d).eval()
    assert hf.language_model.lm_head.weight is not hf.language_model.shared.weight
    model = load_model("instructblip", "tiny_flant5", is_eval=True, pretrained=d)
    assert model.llm.lm_head.weight is not model.llm.shared.weight
    assert torch.equal(model.llm.lm_head.weight, state["language_model.lm_head.weight"])
    assert torch.equal(model.llm.shared.weight, state["language_model.shared.weight"])
    assert "llm.lm_head.weight" not in {n for n, p in model.trainable_parameters()}

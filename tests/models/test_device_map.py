"""`load_model(..., device_map=...)`: the LLM spread over CPU memory and a disk folder by
accelerate gives the single-device model's outputs (generation and ranking), and a map
the model code cannot run is refused before anything is placed."""
from __future__ import annotations

import os

import pytest
import torch

from lavis_ib import load_model
from lavis_ib.common.errors import ConfigError

PROMPTS = ["What is in the picture?", "Describe it."]


def _load(model_type: str, **kwargs):
    torch.manual_seed(0)
    return load_model("instructblip", model_type, is_eval=True, **kwargs)


def _outputs(model):
    size = model.vision_spec.image_size
    image = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    samples = {"image": image, "prompt": PROMPTS}
    text = model.generate(samples, num_beams=2, max_length=6)
    scores, _ = model.score_candidates(samples, candidates=["a dog", "two cats", "no"])
    return text, scores


def test_vicuna_split_over_cpu_and_disk_equals_one_device(tmp_path):
    want = _outputs(_load("tiny_vicuna"))
    placement = {"visual_encoder": "cpu", "qformer": "cpu", "llm.model.embed_tokens": "cpu",
                 "llm.model.layers.0": "cpu", "llm.model.layers.1": "disk",
                 "llm.model.norm": "cpu", "llm.model.rotary_emb": "cpu", "llm.lm_head": "disk"}
    model = _load("tiny_vicuna", device_map=placement, offload_folder=str(tmp_path))
    assert model.llm.model.layers[1].self_attn.q_proj.weight.device.type == "meta"  # on disk
    assert os.listdir(tmp_path)
    assert model.device_map["llm"]["model.layers.1"] == "disk"
    text, scores = _outputs(model)
    assert text == want[0]
    torch.testing.assert_close(scores, want[1], rtol=1e-5, atol=1e-5)


def test_flant5_auto_map_with_a_memory_cap_offloads_and_equals_one_device(tmp_path):
    want = _outputs(_load("tiny_flant5"))
    model = _load("tiny_flant5", device_map="auto", offload_folder=str(tmp_path),
                  max_memory={"cpu": 400_000})
    places = set(model.device_map["llm"].values())
    assert "disk" in places and "cpu" in places
    text, scores = _outputs(model)
    assert text == want[0]
    torch.testing.assert_close(scores, want[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("placement, kwargs, message", [
    ({"qformer": "disk"}, {}, "image path on \\['disk'\\]"),
    ({"llm.model.embed_tokens": "disk"}, {"offload_folder": "x"}, "input embeddings"),
    ({"llm.model.layers.1": "disk"}, {}, "give offload_folder"),
    ({"llm.model.layer.1": "cpu"}, {}, "not modules of InstructBLIP"),
    ("balanced", {}, "must be 'auto' or a mapping"),
])
def test_maps_the_model_cannot_run_are_one_line(placement, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        _load("tiny_vicuna", device_map=placement, **kwargs)


def test_device_map_is_for_inference():
    with pytest.raises(ConfigError, match="device_map is for inference"):
        load_model("instructblip", "tiny_vicuna", device_map="auto")


def test_an_auto_map_without_room_for_the_embeddings_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="max_memory leaves the main device no room"):
        _load("tiny_flant5", device_map="auto", offload_folder=str(tmp_path),
              max_memory={"cpu": 1_000})

"""`model.qformer_attention`: the queries' cross-attention to the image, checked against the
weights transformers' eager InstructBLIP Q-Former returns (`output_attentions=True`) on a
checkpoint transformers wrote, and against the definition of the heatmap."""
from __future__ import annotations

import pytest
import torch

from lavis_ib.common.errors import LavisIbError
from tests.models.conftest import IMAGE, Q

PROMPTS = ["What is in the picture?", "A long instruction: is there a cat on the mat?"]


@pytest.fixture(scope="module")
def llama(our_models):
    return our_models["llama"][0]


def _images(n: int, seed: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed))


def _transformers_cross_attention(directory: str, images: torch.Tensor, prompts) -> list:
    from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

    hf = InstructBlipForConditionalGeneration.from_pretrained(
        directory, attn_implementation="eager").eval()
    tok = InstructBlipProcessor.from_pretrained(directory).qformer_tokenizer
    enc = tok(list(prompts), padding="longest", return_tensors="pt")
    with torch.no_grad():
        image = hf.vision_model(pixel_values=images).last_hidden_state
        queries = hf.query_tokens.expand(len(prompts), -1, -1)
        mask = torch.cat([torch.ones(len(prompts), Q, dtype=torch.long), enc.attention_mask], 1)
        out = hf.qformer(input_ids=enc.input_ids, attention_mask=mask, query_embeds=queries,
                         encoder_hidden_states=image,
                         encoder_attention_mask=torch.ones(image.shape[:2], dtype=torch.long),
                         output_attentions=True, return_dict=True)
    return [c for c in out.cross_attentions if c is not None]


def test_cross_attention_equals_transformers_eager_weights(llama, hf_dirs):
    images = _images(2)
    maps = llama.qformer_attention({"image": images, "prompt": PROMPTS})
    want = _transformers_cross_attention(hf_dirs["llama"], images, PROMPTS)
    assert maps.layers == [0] and len(want) == 1 and maps.grid == (2, 2)
    got = maps.weights[0][:, 0]                     # (B, H, Q, N), the one frame
    assert got.shape == want[0].shape == (2, 2, Q, 5)
    assert got.std() > 0.01        # not uniform: the checkpoint's ViT is not degenerate
    torch.testing.assert_close(got, want[0], rtol=1e-5, atol=1e-6)


def test_heatmap_is_the_patch_mass_averaged_over_heads_and_queries(llama):
    maps = llama.qformer_attention({"image": _images(2), "prompt": PROMPTS})
    probs = maps.weights[0]                          # (B, T, H, Q, N)
    heat = maps.heatmap()
    assert heat.shape == (2, 1, 2, 2)
    manual = probs[..., 1:].mean(dim=(2, 3)).reshape(2, 1, 2, 2)
    torch.testing.assert_close(heat, manual)
    torch.testing.assert_close(heat.sum(dim=(-1, -2)) + maps.cls_share(), torch.ones(2, 1))
    one = maps.heatmap(layer=0, query=1)
    torch.testing.assert_close(one, probs[:, :, :, 1, 1:].mean(dim=2).reshape(2, 1, 2, 2))
    with pytest.raises(LavisIbError, match="layers that read the image are \\[0\\]"):
        maps.heatmap(layer=1)
    with pytest.raises(LavisIbError, match="query 99"):
        maps.heatmap(query=99)


def test_the_instruction_changes_where_instructblip_looks_but_not_blip2(llama):
    image = _images(1)
    a = llama.qformer_attention({"image": image}, prompt="What colour is the car?")
    b = llama.qformer_attention({"image": image}, prompt="How many people are there?")
    assert a.instructions == ["What colour is the car?"]
    assert not torch.allclose(a.weights[0], b.weights[0])
    from lavis_ib import load_model

    torch.manual_seed(0)
    blip2 = load_model("blip2_opt", "tiny_opt", is_eval=True)
    size = blip2.vision_spec.image_size
    frame = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    c = blip2.qformer_attention({"image": frame}, prompt="What colour is the car?")
    d = blip2.qformer_attention({"image": frame}, prompt="How many people are there?")
    torch.testing.assert_close(c.weights, d.weights)   # BLIP-2's queries never read the prompt


def test_video_frames_get_one_map_each_and_bad_input_is_one_line(llama):
    video = torch.randn(1, 3, 2, IMAGE, IMAGE, generator=torch.Generator().manual_seed(4))
    maps = llama.qformer_attention({"image": video, "prompt": "What happens?"})
    assert maps.heatmap().shape == (1, 2, 2, 2)
    frame = llama.qformer_attention({"image": video[:, :, 1], "prompt": "What happens?"})
    torch.testing.assert_close(maps.weights[0][:, 1], frame.weights[0][:, 0])
    with pytest.raises(LavisIbError, match="samples\\['image'\\] must be"):
        llama.qformer_attention({"image": torch.zeros(3, IMAGE, IMAGE)})

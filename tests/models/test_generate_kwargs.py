"""`generate` under transformers' names (`max_new_tokens`, `do_sample`, `top_k`): each lands
on our setting or reaches transformers' `generate` (its effective generation config and its
logits processors are read back), and sampling with them gives what transformers'
InstructBLIP samples on a checkpoint it wrote, under the same seed."""
from __future__ import annotations

import pytest
import torch

from lavis_ib.common.errors import LavisIbError
from tests.models.conftest import IMAGE, Q, hf_min_length

PROMPT = "What is in the picture?"


def _image(size: int, seed: int = 4) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def vicuna(tiny_vicuna):
    return tiny_vicuna, {"image": _image(tiny_vicuna.vision_spec.image_size), "prompt": PROMPT}


def _spy_transformers(model, monkeypatch):
    """The generation config and the logits processors transformers' `generate` resolves
    for each call of the frozen LLM."""
    llm, seen = model.adapter.llm, {"config": [], "processors": []}
    prepare, processors = llm._prepare_generation_config, llm._get_logits_processor

    def spy_prepare(*args, **kwargs):
        out = prepare(*args, **kwargs)
        seen["config"].append(out[0])
        return out

    def spy_processors(*args, **kwargs):
        out = processors(*args, **kwargs)
        seen["processors"].append(list(out))
        return out
    monkeypatch.setattr(llm, "_prepare_generation_config", spy_prepare)
    monkeypatch.setattr(llm, "_get_logits_processor", spy_processors)
    return seen


def test_max_new_tokens_is_max_length(vicuna):
    model, samples = vicuna
    for beams in (1, 3):
        ours = model.generate(samples, num_beams=beams, max_length=7)
        assert model.generate(samples, num_beams=beams, max_new_tokens=7) == ours
        assert model.generate(samples, num_beams=beams, max_length=7, max_new_tokens=7) == ours
    greedy = model.generate(samples, num_beams=1, max_new_tokens=5, min_length=5)
    assert len(model.llm_tokenizer(greedy[0], add_special_tokens=False).input_ids) >= 3


def test_both_spellings_with_different_values_is_one_error(vicuna):
    model, samples = vicuna
    with pytest.raises(LavisIbError) as exc:
        model.generate(samples, max_length=8, max_new_tokens=9)
    assert "max_new_tokens=9" in str(exc.value) and "max_length=8" in str(exc.value)
    with pytest.raises(LavisIbError) as exc:
        model.generate(samples, use_nucleus_sampling=True, do_sample=False)
    assert "do_sample=False" in str(exc.value) and "use_nucleus_sampling=True" in str(exc.value)
    for bad, words in ((dict(top_k=-1), "top_k -1"), (dict(top_k=2.5), "top_k 2.5"),
                       (dict(max_new_tokens=0), "max_new_tokens 0")):
        with pytest.raises(LavisIbError, match=words) as exc:
            model.generate(samples, do_sample=True, **bad)
        assert "\n" not in str(exc.value)


def test_do_sample_and_top_k_reach_transformers(vicuna, monkeypatch):
    model, samples = vicuna
    from transformers import TopKLogitsWarper

    seen = _spy_transformers(model, monkeypatch)
    model.generate(samples, num_beams=1, max_new_tokens=3)
    model.generate(samples, num_beams=1, max_new_tokens=3, do_sample=True)
    model.generate(samples, num_beams=1, max_new_tokens=3, do_sample=True, top_k=7)
    model.generate(samples, num_beams=1, max_new_tokens=3, use_nucleus_sampling=True, top_k=0)
    greedy, default_k, k7, k0 = seen["config"]
    # today's effective top_k: what transformers resolves when nothing is passed
    todays, _ = model.adapter.llm._prepare_generation_config(None)
    assert greedy.do_sample is False and default_k.do_sample is True
    assert default_k.top_k == todays.top_k == 50   # the tiny LLM's generation_config sets none
    assert (k7.do_sample, k7.top_k, k7.max_new_tokens) == (True, 7, 3)
    assert k0.top_k == 0

    def top_k_of(processors):
        return [p.top_k for p in processors if isinstance(p, TopKLogitsWarper)]
    assert [top_k_of(p) for p in seen["processors"]] == [[], [50], [7], []]


def test_top_k_without_sampling_is_logged_not_applied(vicuna, monkeypatch, caplog):
    model, samples = vicuna
    seen = _spy_transformers(model, monkeypatch)
    with caplog.at_level("WARNING", logger="lavis_ib.models.components.inference"):
        out = model.generate(samples, num_beams=1, max_new_tokens=4, top_k=3)
    assert "top_k=3 has no effect without sampling" in caplog.text
    assert out == model.generate(samples, num_beams=1, max_new_tokens=4)
    assert seen["config"][0].do_sample is False


def test_top_k_is_a_generation_setting_and_stream_is_not(tiny_vicuna):
    settings = type(tiny_vicuna).generation_settings()
    assert {"max_new_tokens", "do_sample", "top_k"} <= settings and "stream" not in settings


def _hf_sample(fam, hf, processor, image, prompt, seed, **kwargs):
    enc = processor.qformer_tokenizer([prompt], return_tensors="pt")
    ids = torch.tensor([[hf.config.image_token_index] * Q + processor.tokenizer(prompt).input_ids])
    torch.manual_seed(seed)
    with torch.no_grad():
        out = hf.generate(pixel_values=image, qformer_input_ids=enc.input_ids,
                          qformer_attention_mask=enc.attention_mask, input_ids=ids,
                          attention_mask=torch.ones_like(ids), **kwargs)
    if fam != "t5":
        out = out[:, ids.shape[1]:]
    return processor.tokenizer.batch_decode(out, skip_special_tokens=True)[0].strip()


@pytest.mark.parametrize("fam", ["llama", "t5", "opt"])
def test_sampling_with_top_k_equals_transformers(fam, hf_models, our_models):
    """transformers' InstructBLIP, sampling with top_k 5, top_p 0.9 (our nucleus default)
    and temperature 1.0 under one seed, is the oracle; ours is called with transformers'
    names."""
    hf, processor = hf_models[fam]
    model = our_models[fam][0]
    image = _image(IMAGE, seed=6)
    settings = dict(do_sample=True, top_k=5, num_beams=1, max_new_tokens=8)
    refs, ours = [], []
    for seed in (0, 1, 2):
        refs.append(_hf_sample(fam, hf, processor, image, PROMPT, seed, top_p=0.9,
                               temperature=1.0, **settings, **hf_min_length(fam == "t5", 1)))
        torch.manual_seed(seed)
        ours.append(model.generate({"image": image, "prompt": PROMPT}, min_length=1,
                                   repetition_penalty=1.0, **settings)[0])
    assert ours == refs
    assert len(set(refs)) > 1, "the seeds drew one text: sampling is not being tested"

"""The LAVIS API of InstructBLIP for direct callers: defaults and prompt handling equal
LAVIS's (`blip2_vicuna_instruct.py` / `blip2_t5_instruct.py`), whose values are written
out below as data, not read from our code."""
from __future__ import annotations

import inspect

import pytest
import torch

# LAVIS's InstructBLIP defaults, per LLM family (read from the two model files).
LAVIS = {
    "vicuna": {"generate": dict(use_nucleus_sampling=False, num_beams=5, max_length=256,
                                min_length=1, top_p=0.9, repetition_penalty=1.5,
                                length_penalty=1, num_captions=1, temperature=1),
               "predict_answers": dict(num_beams=5, inference_method="generate", max_len=10,
                                       min_len=1, num_ans_candidates=128, answer_list=None,
                                       prompt="", length_penalty=0),
               "append_eos": False},
    "flant5": {"generate": dict(use_nucleus_sampling=False, num_beams=5, max_length=256,
                                min_length=1, top_p=0.9, repetition_penalty=1.5,
                                length_penalty=1.0, num_captions=1, temperature=1),
               "predict_answers": dict(num_beams=5, inference_method="generate", max_len=10,
                                       min_len=1, num_ans_candidates=128, answer_list=None,
                                       prompt="", length_penalty=-1),
               "append_eos": True},
}
TYPES = {"vicuna": "tiny_vicuna", "flant5": "tiny_flant5"}


@pytest.fixture(scope="module")
def models():
    from lavis_ib import load_model

    return {fam: load_model("instructblip", t, is_eval=True) for fam, t in TYPES.items()}


def _batch(n=2, **extra):
    return {"image": torch.randn(n, 3, 32, 32), **extra}


def _capture(monkeypatch, model, name):
    calls = []

    def fake(samples, *args, **kwargs):
        calls.append((samples, args, kwargs))
        n = samples["image"].shape[0]
        if name == "generate":
            return ["x"] * n
        c = 3
        return torch.arange(n * c, dtype=torch.float).reshape(n, c), torch.ones(n, c, dtype=torch.bool)
    monkeypatch.setattr(model, name, fake)
    return calls


@pytest.mark.parametrize("fam", ["vicuna", "flant5"])
def test_predict_answers_passes_lavis_defaults_to_generate(fam, models, monkeypatch):
    model = models[fam]
    sig = inspect.signature(type(model).predict_answers).parameters
    for key, value in LAVIS[fam]["predict_answers"].items():
        if key == "length_penalty":
            continue    # family-dependent: checked through the call below
        assert sig[key].default == value, key
    calls = _capture(monkeypatch, model, "generate")
    model.predict_answers(_batch(text_input=["what is it?", "why?"]), prompt="Question: {} Short answer:")
    samples, _, kwargs = calls[0]
    expected = LAVIS[fam]["predict_answers"]
    assert kwargs == {"num_beams": expected["num_beams"], "max_length": expected["max_len"],
                      "min_length": expected["min_len"],
                      "length_penalty": expected["length_penalty"]}
    # no repetition penalty is passed: generate's own default (1.5) applies, as in LAVIS
    assert inspect.signature(type(model).generate).parameters["repetition_penalty"].default == \
        LAVIS[fam]["generate"]["repetition_penalty"]
    assert samples["prompt"] == ["Question: what is it? Short answer:",
                                 "Question: why? Short answer:"]
    assert model.default_append_eos is LAVIS[fam]["append_eos"]


@pytest.mark.parametrize("fam", ["vicuna", "flant5"])
def test_generate_signature_defaults_are_lavis(fam, models):
    sig = inspect.signature(type(models[fam]).generate).parameters
    for key, value in LAVIS[fam]["generate"].items():
        assert sig[key].default == value, key


def test_two_slot_prompt_with_choices(models, monkeypatch):
    model = models["vicuna"]
    calls = _capture(monkeypatch, model, "generate")
    model.predict_answers(_batch(1, text_input=["which one?"], choices=[["red", "blue"]]),
                          prompt="Question: {} Options: {}. Short answer:")
    assert calls[0][0]["prompt"] == ["Question: which one? Options: (a) red (b) blue. Short answer:"]


def test_predict_class_adds_lavis_prefixes(models, monkeypatch):
    model = models["vicuna"]
    calls = _capture(monkeypatch, model, "score_candidates")
    model.predict_class(_batch(2, prompt="Question: {} Answer:", text_input=["q1", "q2"],
                               context=["ctx", ""], history=["h1", "h2"],
                               caption=["a cat", "a dog"]), ["yes", "no", "maybe"])
    assert calls[0][0]["prompt"] == [
        'This image has the caption "a cat". dialog history: h1\ncontext: ctx. Question: q1 Answer:',
        'This image has the caption "a dog". dialog history: h2\ncontext: . Question: q2 Answer:']
    calls.clear()
    # LAVIS tests only the first sample's history/caption for being empty
    model.predict_class(_batch(2, prompt="Q: {}", text_input=["a", "b"], history=["", "h"]),
                        ["yes", "no", "maybe"])
    assert calls[0][0]["prompt"] == ["Q: a", "Q: b"]


def test_predict_class_n_segments_changes_memory_not_results(models):
    model = models["flant5"]
    torch.manual_seed(0)
    batch = _batch(2, prompt="Is it {}?", text_input=["red", "big"])
    candidates = ["yes", "no", "maybe", "never", "always"]
    one = model.predict_class(batch, candidates)
    three = model.predict_class(batch, candidates, n_segments=3)
    assert torch.equal(one, three)
    with pytest.raises(Exception, match="n_segments"):
        model.predict_class(batch, candidates, n_segments=0)


def test_flant5_min_length_counts_the_decoder_start_token(models, monkeypatch):
    model = models["flant5"]
    seen = {}

    def fake_generate(**kwargs):
        seen.update(kwargs)
        return torch.zeros((kwargs["inputs_embeds"].shape[0], 2), dtype=torch.long)
    monkeypatch.setattr(model.llm, "generate", fake_generate)
    model.generate(_batch(1, prompt="describe"), num_beams=1, max_length=8, min_length=3)
    assert seen["min_new_tokens"] == 2 and seen["max_new_tokens"] == 8

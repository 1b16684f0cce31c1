"""Generation settings (`models/generation.py`): today's values (written out as data), the
short-answer preset of `predict` and `serve`, the one range check behind `generate`,
`predict` and `serve`, and lengths that fit: the README's call on `tiny_vicuna` works with
default settings, an explicit length that cannot fit is still an error, and serve's
max-length slider ends at the room the LLM context leaves beside the soft prompts."""
from __future__ import annotations

import inspect
import logging

import numpy as np
import pytest
import yaml
from PIL import Image

from lavis_ib.common.errors import ConfigError, LavisIbError
from lavis_ib.common.paths import package_path
from lavis_ib.models import generation
from lavis_ib.models.generation import (ANSWER_DEFAULTS, MODEL_DEFAULTS, SHORT_ANSWER,
                                        UNBOUNDED_MAX_LENGTH, fitted_max_length)

PROMPT = "What is unusual about this image?"
# LAVIS's InstructBLIP `generate` defaults (blip2_vicuna_instruct.py), and the preset
# predict and serve used before generation.py existed
LAVIS_GENERATE = dict(use_nucleus_sampling=False, num_beams=5, max_length=256, min_length=1,
                      top_p=0.9, repetition_penalty=1.5, length_penalty=1.0, num_captions=1,
                      temperature=1.0)
# LAVIS's BLIP-2 `generate` defaults (salesforce/LAVIS 506965b, blip2_opt.py:165-177,
# blip2_t5.py:159-171); blip2_llm takes them too (ours)
LAVIS_BLIP2_GENERATE = {**LAVIS_GENERATE, "max_length": 30, "repetition_penalty": 1.0}
# LAVIS's `predict_answers` defaults (blip2_opt.py:282-294, blip2_t5.py:247-259,
# blip2_vicuna_instruct.py:386-398): the length penalty differs by LLM family (None here:
# the family's, tests/models/test_blip2_lavis_defaults.py checks the values)
LAVIS_ANSWERS = dict(num_beams=5, max_len=10, min_len=1, length_penalty=None)
TABLE = {"instructblip": LAVIS_GENERATE, "blip2_opt": LAVIS_BLIP2_GENERATE,
         "blip2_t5": LAVIS_BLIP2_GENERATE, "blip2_llm": LAVIS_BLIP2_GENERATE}
PREDICT_DEFAULTS = {"num_beams": 5, "max_length": 30, "min_length": 1, "repetition_penalty": 1.5}
SERVE_DEFAULTS = {"num_beams": 5, "max_length": 30, "min_length": 1, "use_nucleus_sampling": False,
                  "top_p": 0.9, "temperature": 1.0, "repetition_penalty": 1.5}


def _tiny_vicuna_yaml() -> dict:
    with open(package_path("configs/models/instructblip/tiny_vicuna.yaml")) as f:
        return yaml.safe_load(f)["model"]


def _room() -> int:
    """tiny_vicuna's LLM context less its soft prompts, read from its YAML."""
    node = _tiny_vicuna_yaml()
    return node["llm_config"]["max_position_embeddings"] - node["num_query_token"]


@pytest.fixture(scope="module")
def readme_model():
    """The README's Python example with `tiny_vicuna` for `vicuna7b`, on the CPU."""
    from lavis_ib import load_model_and_preprocess

    model, vis_processors, _ = load_model_and_preprocess("instructblip", "tiny_vicuna",
                                                         is_eval=True, device="cpu")
    pixels = np.random.default_rng(3).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    image = vis_processors["eval"](Image.fromarray(pixels)).unsqueeze(0)
    return model, vis_processors, image


def test_values_are_todays():
    from lavis_ib import registry
    from lavis_ib.predict.run import GENERATE_DEFAULTS
    from lavis_ib.web.model import GENERATION_DEFAULTS

    assert generation.INSTRUCTBLIP.as_dict() == LAVIS_GENERATE
    assert generation.BLIP2.as_dict() == LAVIS_BLIP2_GENERATE
    assert {name: d.as_dict() for name, d in MODEL_DEFAULTS.items()} == TABLE
    assert SHORT_ANSWER.as_dict() == {**LAVIS_GENERATE, "max_length": 30}
    assert GENERATE_DEFAULTS == PREDICT_DEFAULTS and GENERATION_DEFAULTS == SERVE_DEFAULTS
    for name, defaults in MODEL_DEFAULTS.items():   # each model's generate says the same
        params = inspect.signature(registry.get_model_class(name).generate).parameters
        assert {k: params[k].default for k in LAVIS_GENERATE} == defaults.as_dict(), name
    assert set(ANSWER_DEFAULTS) == set(MODEL_DEFAULTS)
    for name, defaults in ANSWER_DEFAULTS.items():   # and its predict_answers
        assert defaults.as_dict() == LAVIS_ANSWERS, name
        params = inspect.signature(registry.get_model_class(name).predict_answers).parameters
        assert {k: params[k].default for k in LAVIS_ANSWERS} == defaults.as_dict(), name


def test_readme_call_works_with_default_settings(readme_model, caplog):
    """Before: 'LavisIbError: 8 soft prompts and 256 tokens to generate ... leave no room
    for a prompt' (256 new tokens fill tiny_vicuna's 256-token context)."""
    model, _, image = readme_model
    prompt_tokens = len(model.llm_tokenizer(PROMPT).input_ids)
    expected = min(256, _room() - prompt_tokens)
    with caplog.at_level(logging.DEBUG, logger="lavis_ib.models.generation"):
        answers = model.generate({"image": image, "prompt": PROMPT})
    assert len(answers) == 1 and isinstance(answers[0], str)
    assert f"max_length default 256 lowered to {expected}" in caplog.text
    # the fitted default is the explicit length that fits
    samples = {"image": image, "prompt": PROMPT}
    assert model.generate(samples, num_beams=1) == model.generate(samples, num_beams=1,
                                                                  max_length=expected)


def test_an_explicit_length_that_cannot_fit_is_still_an_error(readme_model):
    model, _, image = readme_model
    for length in (256, _room()):
        with pytest.raises(LavisIbError, match="leave no room for a prompt in the LLM's "
                                               "256-token context; lower max_length"):
            model.generate({"image": image, "prompt": PROMPT}, max_length=length)


def test_the_default_is_lowered_only_where_the_context_is_short(caplog):
    with caplog.at_level(logging.DEBUG, logger="lavis_ib.models.generation"):
        assert fitted_max_length(256, None, 40) == 256        # encoder-decoder: no limit
        assert fitted_max_length(256, 2048 - 32, 40) == 256   # vicuna7b: room enough
        assert fitted_max_length(256, 296, 40) == 256         # exactly enough
        assert not caplog.records
        assert fitted_max_length(256, 248, 35) == 213
    assert "lowered to 213" in caplog.text


def test_the_slider_maximum_is_the_room(readme_model, tiny_flant5):
    from lavis_ib.web.model import DemoModel, max_length_limit
    from lavis_ib.web.page import build_app

    model, vis, _ = readme_model
    demo = DemoModel(model, vis, "instructblip:tiny_vicuna")
    assert demo.max_length_limit == _room() == 248
    app = build_app(demo)
    sliders = {b.elem_id: b for b in app.blocks.values() if getattr(b, "elem_id", None)}
    assert sliders["max-length"].maximum == sliders["min-length"].maximum == 248
    assert sliders["max-length"].value == 30
    assert max_length_limit(tiny_flant5) == UNBOUNDED_MAX_LENGTH   # T5: no position limit


# -- the one range check, from each entry point -------------------------------------------
BAD = [({"num_beams": 0}, "num_beams", "must be at least 1"),
       ({"max_length": 0}, "max_length", "must be at least 1"),
       ({"min_length": -1}, "min_length", "must be at least 0"),
       ({"min_length": 5, "max_length": 4}, "min_length", "must not exceed"),
       ({"top_p": 0.0}, "top_p", "must be in (0, 1]"),
       ({"top_p": 1.5}, "top_p", "must be in (0, 1]"),
       ({"temperature": 0.0}, "temperature", "must be above 0"),
       ({"repetition_penalty": 0.0}, "repetition_penalty", "must be above 0")]
FLAGS = {k: "--" + k.replace("_", "-") for k in SERVE_DEFAULTS}
LABELS = {"num_beams": "Beams", "max_length": "Max length", "min_length": "Min length",
          "top_p": "Top-p", "temperature": "Temperature", "repetition_penalty": "Repetition penalty"}


def _predict_settings(bad: dict):
    from lavis_ib.cli.predict import build_parser
    from lavis_ib.predict.run import generate_settings

    argv = ["--model", "instructblip:tiny_vicuna", "x.png"]
    for key, value in bad.items():
        argv += [FLAGS[key], str(value)]
    return generate_settings(build_parser().parse_args(argv), "instructblip")


def _page(readme_model, bad: dict, tmp_path) -> str:
    from lavis_ib.web.callbacks import generate_for_page
    from lavis_ib.web.model import DemoModel

    model, vis, _ = readme_model
    path = tmp_path / "photo.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(path)
    s = {**SERVE_DEFAULTS, **bad}
    answer, status = generate_for_page(
        DemoModel(model, vis, "tiny"), str(path), None, PROMPT, s["num_beams"], s["max_length"],
        s["min_length"], s["use_nucleus_sampling"], s["top_p"], s["temperature"],
        s["repetition_penalty"], 0)
    assert answer == ""
    return status


@pytest.mark.parametrize("bad,key,words", BAD, ids=[str(b) for b, _, _ in BAD])
def test_each_entry_point_refuses_a_value_out_of_range(readme_model, tmp_path, bad, key, words):
    model, _, image = readme_model
    with pytest.raises(LavisIbError) as err:
        model.generate({"image": image, "prompt": PROMPT}, **bad)
    assert str(err.value).startswith(f"generate: {key} ") and words in str(err.value)
    with pytest.raises(ConfigError) as err:
        _predict_settings(bad)
    assert f"{FLAGS[key]} {words}" in str(err.value)
    status = _page(readme_model, bad, tmp_path)
    assert status.startswith("**Error:** " + LABELS[key]) and words in status


def test_a_rule_changed_once_applies_at_every_entry_point(readme_model, tmp_path, monkeypatch):
    """The three entry points share one table of ranges: a rule added there is enforced by
    `generate`, `predict` and the page alike."""
    rule = ("num_beams", lambda v: v <= 4, "must be at most 4 (test rule)")
    monkeypatch.setattr(generation, "_RANGES", generation._RANGES + (rule,))
    model, _, image = readme_model
    with pytest.raises(LavisIbError, match=r"num_beams 5 must be at most 4 \(test rule\)"):
        model.generate({"image": image, "prompt": PROMPT})
    with pytest.raises(ConfigError, match=r"--num-beams must be at most 4 \(test rule\)"):
        _predict_settings({})
    assert "Beams 5 must be at most 4 (test rule)" in _page(readme_model, {}, tmp_path)

"""BLIP-2's own defaults against LAVIS's `blip2_opt` / `blip2_t5`: `generate` and
`predict_answers` settings, `blip2_opt`'s prompt cut at `max_txt_len`, `blip2_t5`'s training
text cut from the right; and the Table 1 BLIP-2 projects, which decode with InstructBLIP's
held-out settings, one value away from LAVIS's BLIP-2 zero-shot ones. LAVIS's values are
written out below as data (salesforce/LAVIS at commit 506965b), never read from our code."""
from __future__ import annotations

import inspect
import logging

import pytest
import torch
import yaml

from lavis_ib.common.paths import package_path

# lavis/models/blip2_models/blip2_opt.py:165-177 and blip2_t5.py:159-171 (`generate`)
LAVIS_GENERATE = dict(use_nucleus_sampling=False, num_beams=5, max_length=30, min_length=1,
                      top_p=0.9, repetition_penalty=1.0, length_penalty=1.0, num_captions=1,
                      temperature=1)
# blip2_opt.py:282-294 and blip2_t5.py:247-259 (`predict_answers`); its `generate` call
# passes no repetition penalty (blip2_opt.py:337-346, blip2_t5.py:296-304), so
# transformers' default, 1.0, applies
LAVIS_ANSWERS = {
    "blip2_opt": dict(num_beams=5, max_len=10, min_len=1, length_penalty=0,
                      repetition_penalty=1.0),
    "blip2_t5": dict(num_beams=5, max_len=10, min_len=1, length_penalty=-1,
                     repetition_penalty=1.0),
}
# blip2_opt.py:53 and :406, blip2_t5.py:51 and :364: max_txt_len 32
LAVIS_MAX_TXT_LEN = 32
# blip2_t5_instruct.py:280-292: InstructBLIP's repetition penalty, which LAVIS's
# InstructBLIP `predict_answers` (blip2_t5_instruct.py:450-456) leaves to `generate`
INSTRUCTBLIP_REPETITION = 1.5

# Ours: blip2_llm is blip2_opt's decoder-only layout with any causal LM; it takes
# blip2_opt's values (docs/protocol.md, "BLIP-2's own defaults")
EXPECTED = {"blip2_opt": LAVIS_ANSWERS["blip2_opt"], "blip2_t5": LAVIS_ANSWERS["blip2_t5"],
            "blip2_llm": LAVIS_ANSWERS["blip2_opt"]}
TINY = {"blip2_opt": "tiny_opt", "blip2_t5": "tiny_flant5", "blip2_llm": "tiny_vicuna"}
LONG_PROMPT = ("Question: what is the small animal sitting on the wooden fence next to the "
               "old red barn doing in the early morning light? Short answer:")


@pytest.fixture(scope="module")
def models():
    from lavis_ib import load_model

    torch.manual_seed(0)
    return {name: load_model(name, t, is_eval=True) for name, t in TINY.items()}


def _images(n: int, size: int) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("name", sorted(TINY))
def test_generate_signature_is_lavis_blip2s(name):
    from lavis_ib import registry

    params = inspect.signature(registry.get_model_class(name).generate).parameters
    assert {k: params[k].default for k in LAVIS_GENERATE} == LAVIS_GENERATE


@pytest.mark.parametrize("name", sorted(TINY))
def test_predict_answers_decodes_with_lavis_values(name, models, monkeypatch):
    """What `predict_answers` hands to generation, every setting resolved (the repetition
    penalty included, which it leaves to `generate`'s default, as LAVIS does)."""
    model = models[name]
    calls = []
    monkeypatch.setattr(model, "_generate", lambda samples, **kw: calls.append(kw) or ["x"])
    model.predict_answers({"image": _images(1, model.vision_spec.image_size),
                           "text_input": ["what is it"]}, prompt="Question: {} Short answer:")
    (settings,) = calls
    expected = EXPECTED[name]
    assert (settings["num_beams"], settings["max_length"], settings["min_length"],
            settings["length_penalty"], settings["repetition_penalty"]) == \
        (expected["num_beams"], expected["max_len"], expected["min_len"],
         expected["length_penalty"], expected["repetition_penalty"])


def _fed_prompts(model, monkeypatch, call):
    """The prompt token rows the LLM adapter receives during `call()`."""
    seen = []
    real = model.adapter.generate

    def spy(prefix, prompts, **settings):
        seen.append([list(r) for r in prompts])
        return real(prefix, prompts, **settings)
    monkeypatch.setattr(model.adapter, "generate", spy)
    call()
    return seen[0]


def test_blip2_opt_cuts_the_prompt_at_max_txt_len_keeping_its_start(monkeypatch, caplog):
    from lavis_ib import load_model

    model = load_model("blip2_opt", "tiny_opt", is_eval=True, max_txt_len=LAVIS_MAX_TXT_LEN)
    tok = model.llm_tokenizer
    prompts = [LONG_PROMPT, "Question: why? Short answer:"]
    assert len(tok(LONG_PROMPT).input_ids) > LAVIS_MAX_TXT_LEN
    # LAVIS's call (blip2_opt.py:219-225, :323-329): the tokenizer's own truncation at
    # max_txt_len, right side (the tokenizer's default), special tokens counted
    assert tok.truncation_side == "right"
    lavis_rows = [tok(p, truncation=True, max_length=LAVIS_MAX_TXT_LEN).input_ids for p in prompts]
    images = _images(2, model.vision_spec.image_size)
    before = model.inference_counts()["num_prompts_cut"]
    with caplog.at_level(logging.WARNING):
        fed = _fed_prompts(model, monkeypatch, lambda: model.generate(
            {"image": images, "prompt": prompts}, num_beams=1, max_length=3))
    assert fed == lavis_rows
    assert model.inference_counts()["num_prompts_cut"] == before + 1
    assert "cut to its first max_txt_len=32 tokens" in caplog.text
    fed = _fed_prompts(model, monkeypatch, lambda: model.predict_answers(
        {"image": images, "text_input": [LONG_PROMPT[10:-14], "why?"]},
        prompt="Question: {} Short answer:", max_len=3))
    assert fed == lavis_rows
    # ranking reads the same rows
    seen = []
    real = model.adapter.score_trie
    monkeypatch.setattr(model.adapter, "score_trie", lambda prefix, rows, *a: seen.append(rows)
                        or real(prefix, rows, *a))
    model.score_candidates({"image": images, "prompt": prompts}, ["yes", "no"])
    assert seen[0] == lavis_rows


@pytest.mark.parametrize("name", ["blip2_t5", "blip2_llm"])
def test_other_blip2_types_read_the_whole_prompt(name, models, monkeypatch):
    """LAVIS's `blip2_t5.generate` (blip2_t5.py:218-220) tokenizes the prompt without
    truncation; `blip2_llm` keeps prompts whole too (ours)."""
    model = models[name]
    assert len(model.llm_tokenizer(LONG_PROMPT * 2).input_ids) > model.max_txt_len
    fed = _fed_prompts(model, monkeypatch, lambda: model.generate(
        {"image": _images(1, model.vision_spec.image_size), "prompt": [LONG_PROMPT * 2]},
        num_beams=1, max_length=2))
    assert fed == [model.llm_tokenizer(LONG_PROMPT * 2).input_ids]
    assert "num_prompts_cut" not in model.inference_counts()


def test_blip2_t5_cuts_training_text_from_the_right(models, monkeypatch, caplog):
    model = models["blip2_t5"]
    tok = model.llm_tokenizer
    # every shipped blip2_t5 type cuts at LAVIS's 32 tokens, input and target alike
    for model_type in ("pretrain_flant5xl", "pretrain_flant5xxl", "caption_coco_flant5xl",
                       "tiny_flant5"):
        node = yaml.safe_load(open(package_path(f"configs/models/blip2_t5/{model_type}.yaml")))
        assert node["model"]["max_txt_len"] == node["model"]["max_output_txt_len"] == \
            LAVIS_MAX_TXT_LEN
    inputs = [LONG_PROMPT, "a short one"]
    outputs = [LONG_PROMPT[::-1], "yes"]
    assert all(len(tok(t).input_ids) > LAVIS_MAX_TXT_LEN for t in (inputs[0], outputs[0]))
    seen = []
    monkeypatch.setattr(model.adapter, "loss", lambda prefix, prompts, targets: seen.append(
        (prompts, targets)) or (prefix.sum() * 0.0, torch.tensor(1)))
    before = model.truncated
    with caplog.at_level(logging.WARNING):
        model({"image": _images(2, model.vision_spec.image_size), "text_input": inputs,
               "text_output": outputs})
    prompts, targets = seen[0]
    # LAVIS's calls (blip2_t5.py:123-136): truncation=True, max_length=max_txt_len
    assert prompts == [tok(t, truncation=True, max_length=LAVIS_MAX_TXT_LEN).input_ids
                       for t in inputs]
    assert targets == [tok(t, truncation=True, max_length=LAVIS_MAX_TXT_LEN).input_ids
                       for t in outputs]
    assert prompts[0][-1] == tok.eos_token_id and prompts[0][:5] == tok(inputs[0]).input_ids[:5]
    assert model.truncated == before + 2 and "1 encoder texts cut" in caplog.text


# -- Table 1's BLIP-2 rows -----------------------------------------------------------------
GENERATING = ("nocaps", "flickr30k", "gqa", "textvqa", "vizwiz_vqa", "ivqa")


def _project(size: str, tmp_path=None, text: str | None = None):
    """The BLIP-2 project, or `text` in its place (beside a copy of the project it
    includes)."""
    from lavis_ib.common.config import Config

    path = package_path(f"configs/projects/blip2/zeroshot_heldout_blip2_{size}.yaml")
    if text is None:
        return Config(path)
    for folder in ("blip2", "instructblip"):
        (tmp_path / folder).mkdir(exist_ok=True)
    for other in ("flant5xl", "flant5xxl"):   # the XXL project includes the XL one
        included = f"instructblip/zeroshot_heldout_{other}.yaml"
        (tmp_path / included).write_text(open(package_path(f"configs/projects/{included}")).read())
    copy = tmp_path / "blip2" / f"zeroshot_heldout_blip2_{size}.yaml"
    copy.write_text(text)
    return Config(str(copy))


def _generate_entries(cfg, family: str) -> dict:
    from lavis_ib import registry

    out = {}
    for name in GENERATING:
        entry = cfg.datasets_cfg[name]
        task = registry.get_task_class(entry.task).for_dataset(name, entry)
        out[name] = task.eval_settings.generate_kwargs(family)
    return out


@pytest.mark.parametrize("size", ["flant5xl", "flant5xxl"])
def test_table1_blip2_projects_decode_as_instructblip_one_value_from_lavis(size, tmp_path):
    from lavis_ib.common.config import Config

    ib = _generate_entries(Config(package_path(
        f"configs/projects/instructblip/zeroshot_heldout_{size}.yaml")), "flant5")
    ours = _generate_entries(_project(size), "flant5")
    # InstructBLIP's project leaves the repetition penalty to the model (InstructBLIP's 1.5)
    assert ours == {k: {**v, "repetition_penalty": INSTRUCTBLIP_REPETITION} for k, v in ib.items()}
    text = open(package_path(f"configs/projects/blip2/zeroshot_heldout_blip2_{size}.yaml")).read()
    assert text.count("&repetition 1.5") == 1
    lavis = _generate_entries(_project(size, tmp_path, text.replace("&repetition 1.5",
                                                                    "&repetition 1.0")), "flant5")
    # LAVIS's BLIP-2 zero-shot settings: beam 5, max 10 / 80, min 1 / 10, the lengths'
    # penalties of the dataset defaults, no repetition penalty (blip2_t5.py:167, LAVIS
    # projects/blip2/eval/gqa_zeroshot_flant5xl_eval.yaml:34-36,
    # caption_nocaps_out_domain_flant5xl_eval.yaml:52-57)
    assert lavis == {k: {**v, "repetition_penalty": 1.0} for k, v in ib.items()}
    assert lavis["gqa"] == dict(num_beams=5, max_length=10, min_length=1, length_penalty=-1,
                                repetition_penalty=1.0)
    assert lavis["nocaps"] == dict(num_beams=5, max_length=80, min_length=10, length_penalty=1,
                                   repetition_penalty=1.0)

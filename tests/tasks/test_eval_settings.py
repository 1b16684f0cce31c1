"""Per-dataset settings: defaults, overrides, and one clear error for every ignored key."""
import pytest
from omegaconf import OmegaConf

from lavis_ib import registry
from lavis_ib.common.errors import ConfigError
from lavis_ib.tasks.eval_settings import fill_prompt, format_options, model_family
from lavis_ib.tasks.zeroshot_defaults import DEFAULTS, HELD_OUT


def task(kind, name, cfg=None):
    return registry.get_task_class(kind).for_dataset(name, cfg or {})


def test_every_default_builds_its_task():
    assert len(HELD_OUT) == 13 and set(HELD_OUT) <= set(DEFAULTS)
    for name, entry in DEFAULTS.items():
        t = task(entry["task"], name)
        assert t.inference == entry["inference"] and t.prompt == entry["prompt"]


def test_project_entry_overrides_defaults_and_accepts_omegaconf():
    cfg = OmegaConf.create({"prompt": "Q: {} A:", "generate": {"num_beams": 3},
                            "eval_subset": 10, "build_info": {"x": 1}, "task": "vqa"})
    t = task("vqa", "ok_vqa", cfg)
    assert t.prompt == "Q: {} A:" and t.generate_kwargs == {"num_beams": 3}
    # a dataset without defaults starts from the task's generic settings
    t = task("vqa", "my_vqa")
    assert t.prompt == "Question: {} Short answer:" and t.generate_kwargs["max_length"] == 10
    # A-OKVQA evaluated as multiple choice ranks its options
    t = task("multiple_choice", "aok_vqa")
    assert t.inference == "rank" and t.prompt == "Question: {} Options: {}. Short answer:"


@pytest.mark.parametrize("kind, name, cfg, match", [
    ("captioning", "nocaps", {"append_eos": True}, "does not read 'append_eos'"),
    ("captioning", "nocaps", {"candidates": ["a"]}, "does not read 'candidates'"),
    ("multiple_choice", "scienceqa", {"generate": {"num_beams": 1}}, "does not read 'generate'"),
    ("vqa", "gqa", {"inference": "rank", "generate": {"num_beams": 1}},
     "only read with inference: generate"),
    ("vqa", "gqa", {"append_eos": False}, "only read with inference: rank"),
    ("vqa", "gqa", {"promt": "x"}, "Did you mean 'prompt'"),
    ("vqa", "gqa", {"generate": {"beams": 2}}, "generate has no such argument"),
    ("vqa", "gqa", {"inference": "ranking"}, "not supported"),
    ("multiple_choice", "iconqa", {"inference": "generate"}, "not supported"),
    ("vqa", "gqa", {"metric": "vqa2"}, "Did you mean 'vqa'"),
    ("vqa", "gqa", {"prompt": "{} {} {}"}, "at most 2"),
    ("vqa", "gqa", {"prompt": "{} {}", "prompt_fields": ["question"]}, "names 1 field"),
    ("vqa", "gqa", {"prompt": "{}", "prompt_fields": ["questoin"]}, "Did you mean"),
    ("classification", "vsr", {"candidates": ["yes", "no"]}, "positive"),
    ("classification", "vsr", {"candidates": {"positive": ["yes"], "negative": ["yes"]}},
     "both sets"),
    ("classification", "vsr", {"append_eos": "yes"}, "true, false"),
    ("classification", "vsr", {"append_eos": {"vicuna": True}}, "exactly the keys"),
    ("dialog", "visdial", {"candidates": "answer_list"}, "sample's own"),
    ("captioning", "nocaps", {"metric": "bleu"}, "coco"),
])
def test_bad_settings_raise_one_clear_error(kind, name, cfg, match):
    with pytest.raises(ConfigError, match=match):
        task(kind, name, cfg)


def test_switching_inference_drops_the_other_modes_defaults():
    t = task("video_qa", "msvd_qa", {"inference": "generate",
                                     "generate": {"num_beams": 1, "max_length": 5}})
    assert t.inference == "generate" and t.generate_kwargs == {"num_beams": 1, "max_length": 5}
    assert "candidates" not in t.settings


def test_prompt_fields_override_the_documented_order(fake_model):
    t = task("vqa", "textvqa", {"prompt": "Q: {} OCR: {}",
                                "prompt_fields": ["question", "ocr_tokens"]})
    model = fake_model()
    import torch
    t.valid_step(model, {"image": torch.zeros(1, 3, 2, 2), "question_id": [1],
                         "question": ["Q?"], "text_input": ["q"], "ocr_tokens": [["a", "b"]],
                         "answers": [["x"]]})
    assert model.calls[0][1] == ["Q: q OCR: a, b"]


def test_helpers():
    assert fill_prompt("a {} b {x} {}", ["1", "2"]) == "a 1 b {x} 2"   # other braces literal
    assert format_options(["x", "y"]) == "(a) x (b) y"
    assert model_family(type("M", (), {"llm_family": "flant5"})()) == "flant5"
    assert model_family(type("M", (), {"model_type": "vicuna7b"})()) == "vicuna"
    with pytest.raises(ConfigError, match="LLM family"):
        model_family(object())

"""The shipped held-out and finetuning projects compose and match the documented settings."""
import glob
import os

import pytest
from omegaconf import OmegaConf

import lavis_ib
from lavis_ib import registry
from lavis_ib.common.config import Config
from lavis_ib.report.paper import HELD_OUT

PROJECTS = os.path.join(os.path.dirname(lavis_ib.__file__), "configs", "projects", "instructblip")
# The model contract's values of the shipped types: (llm_family, default_append_eos).
FAMILY = {"vicuna7b": ("vicuna", False), "vicuna13b": ("vicuna", False),
          "flant5xl": ("flant5", True), "flant5xxl": ("flant5", True)}
# The paper's zero-shot protocol (docs/protocol.md), written out per LLM family.
VQA, OCR_VQA = "Question: {} Short answer:", "OCR tokens: {}. Question: {} Short answer:"
CAPTION = {"num_beams": 5, "max_length": 80, "min_length": 10, "length_penalty": 1}
SHORT = {"vicuna": {"num_beams": 5, "max_length": 10, "min_length": 1, "length_penalty": 0},
         "flant5": {"num_beams": 5, "max_length": 10, "min_length": 1, "length_penalty": -1}}
EOS = {"vicuna": False, "flant5": True}
PROTOCOL = {  # dataset: (task, split, inference, prompt, generate or candidates, metric)
    "nocaps": ("captioning", "val", "generate", "A short image description:", CAPTION, "coco"),
    "flickr30k": ("captioning", "test", "generate", "A short image description:", CAPTION,
                  "coco"),
    "gqa": ("gqa", "test", "generate", VQA, SHORT, "exact"),
    "vsr": ("classification", "test", "rank",
            'Based on the image, is this statement true or false? "{}" Answer:',
            {"positive": ["yes", "true"], "negative": ["no", "false"]}, None),
    "iconqa": ("multiple_choice", "test", "rank", "Question: {} Options: {}. Short answer:",
               "choices", "accuracy"),
    "textvqa": ("vqa", "val", "generate", OCR_VQA, SHORT, "vqa"),
    "visdial": ("dialog", "val", "rank", "Dialog history: {}\nQuestion: {} Short answer:",
                "candidates", None),
    "hateful_memes": ("classification", "val", "rank",
                      'This is an image with: "{}" written on it. Is it hateful? Answer:',
                      {"positive": ["yes"], "negative": ["no"]}, None),
    "vizwiz_vqa": ("vqa", "val", "generate", VQA, SHORT, "vqa"),
    "scienceqa": ("multiple_choice", "test", "rank",
                  "Context: {} Question: {} Options: {}. Answer:", "choices", "accuracy"),
    "msvd_qa": ("video_qa", "test", "rank", VQA, "answer_list", "exact"),
    "msrvtt_qa": ("video_qa", "test", "rank", VQA, "answer_list", "exact"),
    "ivqa": ("video_qa", "test", "generate", VQA, SHORT, "ivqa"),
}


@pytest.mark.parametrize("model_type", sorted(FAMILY))
def test_zeroshot_project_covers_13_held_out_with_paper_settings(model_type):
    path = os.path.join(PROJECTS, f"zeroshot_heldout_{model_type}.yaml")
    cfg = Config(path)
    assert cfg.model_cfg.model_type == model_type and cfg.run_cfg.evaluate_only
    assert cfg.run_cfg.output_dir == f"output/zeroshot_heldout_{model_type}"
    assert list(cfg.datasets_cfg.keys()) == list(HELD_OUT) == list(PROTOCOL)
    family, default_eos = FAMILY[model_type]
    model_cls = registry.get_model_class(cfg.model_cfg.arch)
    for name, entry in cfg.datasets_cfg.items():
        task_name, split, inference, prompt, values, metric = PROTOCOL[name]
        task = registry.get_task_class(entry.task).for_dataset(name, entry, model_cls=model_cls)
        assert (entry.task, list(entry.eval_splits)) == (task_name, [split]), name
        assert (task.inference, task.prompt) == (inference, prompt), name
        assert task.settings.get("metric") == metric, name
        if inference == "generate":
            expected = values[family] if values is SHORT else values
            assert task.eval_settings.generate_kwargs(family) == expected, name
        else:
            assert task.candidates == values, name
            assert task.eval_settings.append_eos_for(family, default_eos) is EOS[family], name


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(PROJECTS, "finetune_*.yaml"))),
                         ids=os.path.basename)
def test_finetune_projects_compose(path):
    cfg = Config(path)
    assert cfg.model_cfg.vision.image_size == 224 and cfg.model_cfg.freeze_vit
    for name, entry in cfg.datasets_cfg.items():
        registry.get_task_class(entry.task).for_dataset(
            name, entry, model_cls=registry.get_model_class(cfg.model_cfg.arch))


def test_finetune_projects_for_table3_datasets_exist():
    found = {os.path.basename(p) for p in glob.glob(os.path.join(PROJECTS, "finetune_*.yaml"))}
    for name in ("scienceqa", "ocr_vqa", "ok_vqa", "aok_vqa"):
        for model_type in ("flant5xl", "vicuna7b"):
            assert f"finetune_{name}_{model_type}.yaml" in found
    for path in found:
        cfg = OmegaConf.load(os.path.join(PROJECTS, path))
        name = next(iter(cfg.datasets))
        assert list(cfg.run.select_metric) == [f"{name}.acc"]

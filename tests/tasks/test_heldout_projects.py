"""The shipped held-out and finetuning projects compose and match the documented settings."""
import glob
import os

import pytest
from omegaconf import OmegaConf

import lavis_ib
from lavis_ib import registry
from lavis_ib.common.config import Config
from lavis_ib.tasks.eval_settings import resolve_family_value
from lavis_ib.tasks.zeroshot_defaults import DEFAULTS, HELD_OUT

PROJECTS = os.path.join(os.path.dirname(lavis_ib.__file__), "configs", "projects", "instructblip")
FAMILY = {"vicuna7b": "vicuna", "vicuna13b": "vicuna", "flant5xl": "flant5", "flant5xxl": "flant5"}


@pytest.mark.parametrize("model_type", sorted(FAMILY))
def test_zeroshot_project_covers_13_held_out_with_paper_settings(model_type):
    path = os.path.join(PROJECTS, f"zeroshot_heldout_{model_type}.yaml")
    cfg = Config(path)
    assert cfg.model_cfg.model_type == model_type and cfg.run_cfg.evaluate_only
    assert list(cfg.datasets_cfg.keys()) == list(HELD_OUT)
    family = type("M", (), {"llm_family": FAMILY[model_type]})()
    for name, entry in cfg.datasets_cfg.items():
        expected = DEFAULTS[name]
        task = registry.get_task_class(entry.task).for_dataset(name, entry)
        assert entry.task == expected["task"] and task.inference == expected["inference"]
        assert task.prompt == expected["prompt"]
        for key, value in expected.get("generate", {}).items():
            assert task.generate_kwargs[key] == resolve_family_value(value, family), (name, key)
        if task.inference == "rank":
            assert task.append_eos is (FAMILY[model_type] == "flant5"), name
        assert len(entry.eval_splits) == 1


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(PROJECTS, "finetune_*.yaml"))),
                         ids=os.path.basename)
def test_finetune_projects_compose(path):
    cfg = Config(path)
    assert cfg.model_cfg.vision.image_size == 224 and cfg.model_cfg.freeze_vit
    for name, entry in cfg.datasets_cfg.items():
        registry.get_task_class(entry.task).for_dataset(name, entry)


def test_finetune_projects_for_table3_datasets_exist():
    found = {os.path.basename(p) for p in glob.glob(os.path.join(PROJECTS, "finetune_*.yaml"))}
    for name in ("scienceqa", "ocr_vqa", "ok_vqa", "aok_vqa"):
        for model_type in ("flant5xl", "vicuna7b"):
            assert f"finetune_{name}_{model_type}.yaml" in found
    for path in found:
        cfg = OmegaConf.load(os.path.join(PROJECTS, path))
        name = next(iter(cfg.datasets))
        assert list(cfg.run.select_metric) == [f"{name}.acc"]

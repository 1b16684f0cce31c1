"""Every YAML shipped under configs/ must load, name registered classes, and compose."""
import glob
import os

import pytest
from omegaconf import OmegaConf

from lavis_ib.common.config import Config, compose_dataset
from lavis_ib.common.project_files import load_yaml
from lavis_ib.common.registry import registry
from lavis_ib.common.paths import package_path
from lavis_ib.processors import build_processors

CONFIG_ROOT = package_path("configs")


def _yamls(sub):
    return sorted(glob.glob(os.path.join(CONFIG_ROOT, sub, "**", "*.yaml"), recursive=True))


def _id(path):
    return os.path.relpath(path, CONFIG_ROOT)


def test_top_level_configs_symlink_points_at_package_configs():
    repo_configs = os.path.join(os.path.dirname(CONFIG_ROOT), os.pardir, "configs")
    assert os.path.realpath(repo_configs) == os.path.realpath(CONFIG_ROOT)


@pytest.mark.parametrize("path", _yamls("models"), ids=_id)
def test_model_default_yaml(path):
    cfg = load_yaml(path)
    model_cls = registry.get_model_class(cfg.model.arch)
    registered = {os.path.realpath(package_path(p))
                  for p in model_cls.PRETRAINED_MODEL_CONFIG_DICT.values()}
    assert os.path.realpath(path) in registered, f"{path} is not a registered model type"
    preprocess = cfg.get("preprocess") or {}
    for group in ("vis_processor", "text_processor"):
        if group in preprocess:
            build_processors(preprocess[group])


@pytest.mark.parametrize("path", _yamls("datasets"), ids=_id)
def test_dataset_default_yaml(path):
    cfg = load_yaml(path)
    assert len(cfg.datasets) == 1, "one dataset per default YAML"
    name = next(iter(cfg.datasets))
    builder_cls = registry.get_builder_class(name)
    assert os.path.realpath(path) in {os.path.realpath(package_path(p))
                                      for p in builder_cls.DATASET_CONFIG_DICT.values()}
    entry = cfg.datasets[name]
    for group in ("vis_processor", "text_processor"):
        if entry.get(group):
            build_processors(entry[group])
    if entry.get("task"):   # its evaluation settings are ones the task reads
        registry.get_task_class(entry.task).for_dataset(name, compose_dataset(name))


@pytest.mark.parametrize("path", _yamls("projects"), ids=_id)
def test_project_yaml_composes(path):
    cfg = Config(path)
    assert OmegaConf.select(cfg.config, "run.task")
    registry.get_task_class(cfg.run_cfg.task)
    registry.get_runner_class(cfg.run_cfg.runner)
    registry.get_lr_scheduler_class(cfg.run_cfg.lr_sched)
    model_cls = registry.get_model_class(cfg.model_cfg.arch)
    for name, entry in cfg.datasets_cfg.items():
        if entry.get("task"):
            task_cls = registry.get_task_class(entry.task)
            task_cls.for_dataset(name, entry, model_cls=model_cls)

"""Shared fixtures of the dataset tests: one fixture tree for the session and a helper
that builds a dataset from its default YAML merged with overrides (small processors)."""
from __future__ import annotations

from typing import Any

import pytest
from omegaconf import OmegaConf

from lavis_ib.common.registry import registry

SMALL = 32  # processor size for speed; the fixture images are 24 px


def small_processors(cfg: Any) -> Any:
    for group in ("vis_processor",):
        node = cfg.get(group) or {}
        for split in node:
            if "image_size" in node[split]:
                node[split].image_size = SMALL
    return cfg


def dataset_config(name: str, overrides: dict[str, Any] | None = None, only_splits: bool = False) -> Any:
    """The default YAML entry of `name` merged with `overrides`; with `only_splits` the
    splits are exactly those the overrides list (OmegaConf merges cannot delete keys)."""
    cls = registry.get_builder_class(name)
    cfg = OmegaConf.merge(OmegaConf.load(cls.default_config_path()).datasets[name], overrides or {})
    if only_splits:
        cfg.build_info.annotations = overrides["build_info"]["annotations"]
    return small_processors(cfg)


def build(name: str, overrides: dict[str, Any] | None = None, only_splits: bool = False) -> dict[str, Any]:
    """{split: dataset} of `name` built from its default YAML + `overrides`."""
    return registry.get_builder_class(name)(dataset_config(name, overrides, only_splits)).build_datasets()


@pytest.fixture(scope="session")
def fixture_overrides(fixture_root) -> dict[str, dict[str, Any]]:
    """{name: overrides} of every dataset (the session's fixture root, tests/conftest.py)."""
    return fixture_root.overrides

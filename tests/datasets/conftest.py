"""Shared fixtures of the dataset tests: one fixture tree for the session and a helper
that builds a dataset from its default YAML merged with overrides (small processors)."""
from __future__ import annotations

from typing import Any

import pytest
from omegaconf import OmegaConf

from lavis_ib.common.registry import registry
from lavis_ib.datasets.fixtures import write_fixtures

SMALL = 32  # processor size for speed; the fixture images are 24 px


def small_processors(cfg: Any) -> Any:
    for group in ("vis_processor",):
        node = cfg.get(group) or {}
        for split in node:
            if "image_size" in node[split]:
                node[split].image_size = SMALL
    return cfg


def dataset_config(name: str, overrides: dict[str, Any] | None = None) -> Any:
    cls = registry.get_builder_class(name)
    cfg = OmegaConf.load(cls.default_config_path()).datasets[name]
    return small_processors(OmegaConf.merge(cfg, overrides or {}))


def build(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """{split: dataset} of `name` built from its default YAML + `overrides`."""
    return registry.get_builder_class(name)(dataset_config(name, overrides)).build_datasets()


@pytest.fixture(scope="session")
def fixture_overrides(tmp_path_factory) -> dict[str, dict[str, Any]]:
    """{name: overrides} of all 26 datasets written once per session."""
    return write_fixtures(str(tmp_path_factory.mktemp("fixtures")))

"""`BaseDatasetBuilder`: reads a dataset's config (`build_info`, processors) and builds
its splits. Subclasses name their dataset classes and default YAML; the LAVIS signature
of dataset classes is kept (vis_processor=, text_processor=, vis_root=, ann_paths=).
"""
from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lavis_ib.common.errors import ConfigError, DataError, did_you_mean
from lavis_ib.models.base_model import package_path
from lavis_ib.processors.build import build_processor


class BaseDatasetBuilder:
    """Base of registered dataset builders.

    Class attributes:
        train_dataset_cls: dataset class of the training split(s).
        eval_dataset_cls: dataset class of the val/test splits.
        DATASET_CONFIG_DICT: {type: default YAML path} ("default" at least).
        DATA_SOURCE: where users get the data (shown when a file is missing).
    """

    train_dataset_cls: type | None = None
    eval_dataset_cls: type | None = None
    DATASET_CONFIG_DICT: dict[str, str] = {}
    DATA_SOURCE: str = ""
    data_type: str = "images"

    def __init__(self, cfg: Any = None) -> None:
        if cfg is None:
            cfg = OmegaConf.load(self.default_config_path()).datasets
            cfg = next(iter(cfg.values())) if len(cfg) == 1 else cfg
        elif not isinstance(cfg, DictConfig):
            cfg = OmegaConf.create(cfg)
        self.config = cfg
        self.data_type = cfg.get("data_type", self.data_type)
        self.vis_processors: dict[str, Any] = {"train": None, "eval": None}
        self.text_processors: dict[str, Any] = {"train": None, "eval": None}

    @classmethod
    def default_config_path(cls, type: str = "default") -> str:  # noqa: A002 (LAVIS name)
        if type not in cls.DATASET_CONFIG_DICT:
            raise ConfigError(
                f"{cls.__name__} has no config type '{type}'."
                f"{did_you_mean(type, cls.DATASET_CONFIG_DICT)} "
                f"Types: {', '.join(sorted(cls.DATASET_CONFIG_DICT)) or '(none)'}.")
        return package_path(cls.DATASET_CONFIG_DICT[type])

    # -- processors -----------------------------------------------------------------
    def build_processors(self) -> None:
        for attr, key in (("vis_processors", "vis_processor"), ("text_processors", "text_processor")):
            node = self.config.get(key) or {}
            getattr(self, attr).update({split: build_processor(node.get(split))
                                        for split in ("train", "eval") if node.get(split)})

    # -- files ----------------------------------------------------------------------
    def resolve_path(self, path: str) -> str:
        """Relative storage paths are taken from `cache_root` (or the working directory)."""
        path = os.path.expanduser(str(path))
        root = self.config.get("cache_root")
        return path if os.path.isabs(path) or not root else os.path.join(str(root), path)

    def require(self, path: str, what: str) -> str:
        """`path` if it exists, else a DataError naming it and the data's source."""
        if not os.path.exists(path):
            source = f" Get it from {self.DATA_SOURCE}." if self.DATA_SOURCE else ""
            raise DataError(f"{type(self).__name__}: {what} '{path}' does not exist.{source} "
                            f"Set its location under build_info in the dataset config.")
        return path

    def build_datasets(self) -> dict[str, Any]:
        """{split: dataset} for every split listed under `build_info.annotations`."""
        self.build_processors()
        return self.build()

    def build(self) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement build()")

"""`BaseTask`: what a task owns.

Training: the task builds the model and datasets from the composed config and computes
the loss of a batch. Evaluation is per dataset: each dataset entry names its own task,
and `for_dataset` reads that entry's evaluation settings (`inference`, `prompt`,
`generate`, ...). The evaluation loop calls `valid_step` on each rank's shard, gathers the
records, de-duplicates them by `id`, and calls `metrics` once on rank 0.
"""
from __future__ import annotations

from typing import Any, Mapping

from lavis_ib.common.errors import ConfigError, did_you_mean


class BaseTask:
    """Base of registered tasks.

    Class attributes:
        EVAL_KEYS: per-dataset settings this task reads; any other evaluation setting
            under the dataset is an error (LAVIS silently ignores misplaced prompts).
    """

    EVAL_KEYS: frozenset[str] = frozenset()

    def __init__(self, cfg: Any = None, dataset_name: str | None = None) -> None:
        self.cfg = cfg
        self.dataset_name = dataset_name

    # -- training -------------------------------------------------------------------
    @classmethod
    def setup_task(cls, cfg: Any) -> "BaseTask":
        """The task for a whole composed config (`cfg.run.task`)."""
        return cls(cfg)

    def build_model(self, cfg: Any) -> Any:
        from lavis_ib.common.registry import registry

        model_cfg = cfg.model
        return registry.get_model_class(model_cfg.arch).from_config(model_cfg)

    def build_datasets(self, cfg: Any) -> dict[str, dict[str, Any]]:
        """{dataset name: {split: dataset}} for every entry under `cfg.datasets`."""
        from lavis_ib.common.registry import registry

        datasets = {}
        for name, dataset_cfg in cfg.datasets.items():
            builder = registry.get_builder_class(name)(dataset_cfg)
            datasets[name] = builder.build_datasets()
        return datasets

    def train_step(self, model: Any, samples: Mapping[str, Any]) -> Any:
        return model(samples)["loss"]

    # -- evaluation -----------------------------------------------------------------
    @classmethod
    def for_dataset(cls, name: str, dataset_cfg: Mapping[str, Any]) -> "BaseTask":
        """The task that evaluates dataset `name` with the settings in its entry."""
        return cls(dataset_cfg, dataset_name=name)

    @classmethod
    def check_eval_keys(cls, name: str, given: Mapping[str, Any], all_eval_keys: set[str]) -> None:
        """Raise for an evaluation setting this task would ignore."""
        for key in given:
            if key in all_eval_keys and key not in cls.EVAL_KEYS:
                raise ConfigError(
                    f"datasets.{name}.{key}: the '{cls.__name__}' task does not read "
                    f"'{key}'; it reads {sorted(cls.EVAL_KEYS) or 'no evaluation settings'}."
                    f"{did_you_mean(key, cls.EVAL_KEYS)}")

    def before_evaluation(self, model: Any, dataset: Any) -> None:
        """Called once per split before its first batch (LAVIS's hook): tasks that need
        the dataset (e.g. an answer vocabulary to rank) take it here."""

    def valid_step(self, model: Any, samples: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Predictions for one batch: one JSON-serialisable record per sample, each with
        an ``id`` (the sample's question_id / instance_id)."""
        raise NotImplementedError(f"{type(self).__name__} must implement valid_step")

    def metrics(self, records: list[dict[str, Any]], dataset: Any) -> dict[str, float]:
        """Metrics over all de-duplicated records of a dataset split (rank 0 only)."""
        raise NotImplementedError(f"{type(self).__name__} must implement metrics")

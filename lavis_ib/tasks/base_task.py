"""Task bases: `BaseTask` (the root every registered task derives from), `TrainTask`.

A run has one training task (`run.task`) but each evaluated dataset its own evaluation task
(`datasets.<name>.task`, an `EvalTask`), so training and evaluation are separate bases."""
from __future__ import annotations

from typing import Any, Mapping

from lavis_ib.common.config import builder_name
from lavis_ib.common.errors import ConfigError, LavisIbError

LOSS_KEYS = ("loss", "loss_sum", "num_tokens")


class BaseTask:
    """Root of registered tasks (the registry checks subclasses of it; LAVIS code imports
    it as `lavis_ib.tasks.BaseTask`). Derive from `TrainTask` or `EvalTask`.

    Used directly as a base, a class that defines `valid_step` and `metrics` is a
    per-dataset evaluation task without settings of its own.

    Attributes:
        cfg: the dataset's entry (`datasets.<name>`) the task evaluates.
        dataset_name: that entry's name.
    """

    def __init__(self, cfg: Any = None, dataset_name: str | None = None) -> None:
        self.cfg = cfg
        self.dataset_name = dataset_name

    @classmethod
    def setup_task(cls, cfg: Any) -> "BaseTask":
        """The task of `run.task`; only training tasks can be one."""
        raise ConfigError(f"run.task: '{cls.__name__}' is not a training task; name one "
                          f"(e.g. instruction_tuning) and give evaluation tasks per dataset "
                          f"(datasets.<name>.task).")

    @classmethod
    def for_dataset(cls, name: str, dataset_cfg: Any = None,
                    model_cls: type | None = None) -> "BaseTask":
        """The task evaluating dataset `name` (`model_cls`: the evaluated model's class,
        when known, so settings are checked against it before the first batch)."""
        return cls(dataset_cfg, dataset_name=name)

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


class TrainTask(BaseTask):
    """A training task over a whole composed config.

    A run has one training task (`run.task`): it builds the model and the datasets from the
    composed config and returns the model's loss terms for a batch.

    Attributes:
        config: the composed run config (`model`, `datasets`, `run`), as given to
            `setup_task`.
    """

    def __init__(self, config: Any = None) -> None:
        self.config = config
        self.dataset_name = None

    @classmethod
    def setup_task(cls, cfg: Any) -> "TrainTask":
        return cls(cfg)

    def build_model(self, cfg: Any) -> Any:
        from lavis_ib.common.registry import registry

        from lavis_ib.common.precision import with_resolved_precisions

        # a per-device precision ({cuda: fp16, cpu: fp32}) takes the run's device's entry
        model_cfg = with_resolved_precisions(cfg.model, cfg.get("run", {}).get("device"))
        return registry.get_model_class(model_cfg.arch).from_config(model_cfg)

    def build_datasets(self, cfg: Any) -> dict[str, dict[str, Any]]:
        """{entry name: {split: dataset}} for every entry under `cfg.datasets`, each built
        by its builder (`builder:`, else the entry's name) from the entry's config."""
        from lavis_ib.common.registry import registry

        return {name: registry.get_builder_class(builder_name(name, entry))(entry)
                .build_datasets() for name, entry in cfg.datasets.items()}

    def train_step(self, model: Any, samples: Mapping[str, Any]) -> Mapping[str, Any]:
        """The model's output for a training batch (the model contract).

        Returns:
            {"loss", "loss_sum", "num_tokens"}: the runner back-propagates `loss_sum` and
            divides gradients by the step's token count over all ranks.

        Raises:
            LavisIbError: the model's forward does not return these keys.
        """
        out = model(samples)
        if not isinstance(out, Mapping) or any(k not in out for k in LOSS_KEYS):
            got = sorted(out) if isinstance(out, Mapping) else type(out).__name__
            raise LavisIbError(f"{type(model).__name__}.forward must return "
                               f"{{{', '.join(LOSS_KEYS)}}} (the model contract); got {got}.")
        return out

    @classmethod
    def for_dataset(cls, name: str, dataset_cfg: Any = None,
                    model_cls: type | None = None) -> "BaseTask":
        raise ConfigError(f"datasets.{name}.task: '{cls.__name__}' trains and does not "
                          f"evaluate; name an evaluation task (captioning, vqa, ...).")

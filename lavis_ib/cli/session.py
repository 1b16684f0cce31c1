"""What train, evaluate and export share above the command line: joining the process
group with logging set up, building task, model, datasets and runner from a composed
config, and finding a run's checkpoint. No command imports another command.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

from lavis_ib.cli.entry import setup_logging
from lavis_ib.common.registry import registry
from lavis_ib.common.seeding import seed_everything


@contextlib.contextmanager
def joined(cfg: Any) -> Iterator[Any]:
    """This process's `DistInfo` for the run of `cfg` (the process group joined under
    torchrun, logging set up); the group is left on exit."""
    from lavis_ib.runners.strategies import setup_distributed, teardown_distributed

    info = setup_distributed(cfg.run_cfg)
    setup_logging(info.rank)
    try:
        yield info
    finally:
        teardown_distributed(info)


def build(cfg: Any, info: Any) -> tuple[Any, Any, Any, Any]:
    """(task, model, datasets, runner) from a composed config, in a joined process group.

    The seed is set first so that every rank draws identical initial weights (FSDP and
    DDP need them equal).
    """
    run = cfg.run_cfg
    seed_everything(run.seed)
    task = registry.get_task_class(run.task).setup_task(cfg.config)
    model = task.build_model(cfg.config)
    datasets = task.build_datasets(cfg.config)
    runner = registry.get_runner_class(run.runner)(cfg, task, model, datasets, dist_info=info)
    return task, model, datasets, runner


def checkpoint_folder(path: str) -> str:
    """A run folder's best checkpoint (else, with a warning when `best/` is damaged or
    not finite, its newest that verifies), or the given checkpoint folder."""
    from lavis_ib.runners.checkpointing.manager import best_or_newest

    return best_or_newest(path)


def adapters_option(checkpoint: str, cfg: Any) -> str | None:
    """`model.llm_lora=<settings>` when `checkpoint` (a run folder or one of its checkpoint
    folders) belongs to a run that trained LoRA adapters and the composed `cfg` has none:
    the adapters are trained weights, so evaluating that checkpoint builds them as the run
    did (a project that sets its own `llm_lora` keeps it). None otherwise."""
    import yaml

    from lavis_ib.common.project_files import load_yaml

    model = cfg.config.get("model")
    if model is None or model.get("llm_lora"):
        return None
    for folder in (checkpoint, os.path.dirname(os.path.dirname(os.path.abspath(checkpoint)))):
        path = os.path.join(folder, "config.yaml")
        if os.path.isfile(path):
            run_model = load_yaml(path, "the checkpoint's run config").get("model") or {}
            settings = run_model.get("llm_lora")
            if not settings:
                return None
            from lavis_ib.common.containers import to_plain

            flow = yaml.safe_dump(to_plain(settings), default_flow_style=True).strip()
            return f"model.llm_lora={flow}"
    return None

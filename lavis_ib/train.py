"""`python -m lavis_ib.train --cfg-path PROJECT.yaml [--options k=v ...]`: train a project.

Parse and compose the config, join the process group (under torchrun), build the task,
model and datasets with the same seed on every rank, and hand them to the runner.

    python -m lavis_ib.train --cfg-path configs/projects/instructblip/demo_tiny.yaml
    torchrun --standalone --nproc_per_node 8 -m lavis_ib.train \\
        --cfg-path configs/projects/instructblip/instruction_tuning_vicuna7b.yaml \\
        --options run.distributed=fsdp
"""
from __future__ import annotations

import logging
import sys
from typing import Any, Sequence

from lavis_ib.common.config import Config
from lavis_ib.common.containers import to_plain
from lavis_ib.common.entry import project_parser, run_entry
from lavis_ib.common.registry import registry


def setup_logging(rank: int) -> None:
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
                        force=True)


def build(cfg: Config, info: Any) -> Any:
    """(task, model, datasets, runner) from a composed config, in a joined process group."""
    from lavis_ib.runners.runner_iter import seed_everything

    run = to_plain(cfg.run_cfg)
    seed_everything(run["seed"])  # identical initialisation on every rank (FSDP needs it)
    task = registry.get_task_class(run["task"]).setup_task(cfg.config)
    model = task.build_model(cfg.config)
    datasets = task.build_datasets(cfg.config)
    runner = registry.get_runner_class(run["runner"])(cfg, task, model, datasets, dist_info=info)
    return task, model, datasets, runner


def main(argv: Sequence[str] | None = None) -> int:
    parser = project_parser("python -m lavis_ib.train",
                            "Instruction-tune a model from a project file.")
    args = parser.parse_args(argv)
    cfg = Config(args.cfg_path, args.options)
    from lavis_ib.runners.strategies import setup_distributed, teardown_distributed

    info = setup_distributed(to_plain(cfg.run_cfg))
    setup_logging(info.rank)
    try:
        _, _, _, runner = build(cfg, info)
        if cfg.run_cfg.evaluate_only:
            runner.evaluate()
        else:
            result = runner.train()
            logging.getLogger(__name__).info(
                "finished at step %d; best %s; last checkpoint %s",
                result["step"], result["best"], result["last_checkpoint"])
    finally:
        teardown_distributed(info)
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main, None, "python -m lavis_ib.train"))

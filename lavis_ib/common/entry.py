"""What the entry points (train, evaluate, export, predict, demo, report) share: the
`--cfg-path/--options` parser, error handling that prints one line for bad input instead
of a traceback, joining the process group with logging set up, building task, model,
datasets and runner from a composed config, and finding a run's checkpoint.

The layers above `common` (runners, tasks, models) are imported inside the functions
that need them, so `import lavis_ib.common.entry` stays light; only modules with a
command line import this one, and no command imports another command.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from typing import Any, Callable, Iterator, Sequence

from lavis_ib.common.errors import LavisIbError


def project_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--cfg-path", required=True, help="project YAML file")
    parser.add_argument("--options", nargs="+", default=[],
                        help="overrides: key=value (or LAVIS's 'key value' pairs)")
    return parser


def run_entry(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None,
              prog: str) -> int:
    """Call `main(argv)`; a `LavisIbError` becomes 'prog: error: message' and exit code 2."""
    try:
        return int(main(argv) or 0)
    except LavisIbError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def setup_logging(rank: int) -> None:
    """INFO on rank 0, warnings only elsewhere (N ranks would print every line N times)."""
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
                        force=True)


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
    from lavis_ib.common.registry import registry
    from lavis_ib.common.seeding import seed_everything

    run = cfg.run_cfg
    seed_everything(run.seed)
    task = registry.get_task_class(run.task).setup_task(cfg.config)
    model = task.build_model(cfg.config)
    datasets = task.build_datasets(cfg.config)
    runner = registry.get_runner_class(run.runner)(cfg, task, model, datasets, dist_info=info)
    return task, model, datasets, runner


def checkpoint_folder(path: str) -> str:
    """A run folder's best checkpoint (else its newest), or the given checkpoint folder."""
    from lavis_ib.runners.checkpoint import resolve_checkpoint

    best = os.path.join(path, "checkpoints", "best")
    return best if os.path.isfile(os.path.join(best, "meta.json")) else resolve_checkpoint(path)

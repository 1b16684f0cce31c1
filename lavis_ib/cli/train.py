"""`lavis-ib train` (also `python -m lavis_ib.train`): train a project.

Checks and composes the config, joins the process group (under torchrun), builds the task,
model and datasets with the same seed on every rank and hands them to the runner; the
commands for one GPU and for many are in docs/training.md."""
from __future__ import annotations

import logging
import sys
from typing import Sequence

from lavis_ib.cli.preflight import checked_config
from lavis_ib.cli.entry import project_parser, run_entry
from lavis_ib.common.metrics_text import format_value
from lavis_ib.cli.session import build, joined


def main(argv: Sequence[str] | None = None) -> int:
    parser = project_parser("lavis-ib train",
                            "Instruction-tune a model from a project file.")
    args = parser.parse_args(argv)
    cfg = checked_config(args.cfg_path, args.options)   # every pre-flight check first
    with joined(cfg) as info:
        _, _, _, runner = build(cfg, info)
        if cfg.run_cfg.evaluate_only:
            runner.evaluate()
        else:
            result = runner.train()
            best = result["best"] or {}
            best_text = ("no validation" if best.get("score") is None else
                         f"best validation score {format_value(best['score'])} at step {best['step']}")
            logging.getLogger(__name__).info("finished at step %d; %s; last checkpoint %s",
                                             result["step"], best_text, result["last_checkpoint"])
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main, None, "lavis-ib train"))

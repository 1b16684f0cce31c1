"""`lavis-ib evaluate` (also `python -m lavis_ib.evaluate`): evaluate a project's datasets.

Every dataset with an evaluation split is scored by its own task, into a folder that never
rewrites a training run's records; docs/evaluation.md describes the splits chosen, the
folders, `--checkpoint`, resuming after a kill and sharding under torchrun."""
from __future__ import annotations

import logging
import os
import sys
from typing import Sequence

from lavis_ib.cli.preflight import checked_config
from lavis_ib.cli.entry import project_parser, run_entry
from lavis_ib.common.metrics_text import metrics_line
from lavis_ib.cli.session import adapters_option, build, checkpoint_folder, joined
from lavis_ib.runners.run_folder import check_evaluation_name

logger = logging.getLogger("lavis_ib.cli.evaluate")


def main(argv: Sequence[str] | None = None) -> int:
    parser = project_parser("lavis-ib evaluate", "Evaluate a project's eval splits.")
    parser.add_argument("--checkpoint", default=None,
                        help="training run folder or checkpoint folder to load trainable "
                             "weights from")
    parser.add_argument("--name", default=None,
                        help="evaluation name under a training run's eval/ (default: the "
                             "project file's name)")
    args = parser.parse_args(argv)
    name = args.name or os.path.splitext(os.path.basename(args.cfg_path))[0]
    check_evaluation_name(name)   # a path would write outside RUN/eval/
    cfg = checked_config(args.cfg_path, args.options, training=False)   # pre-flight checks first
    adopted = adapters_option(args.checkpoint, cfg) if args.checkpoint else None
    if adopted:   # the run trained LoRA adapters: build them as it did
        cfg = checked_config(args.cfg_path, [*args.options, adopted], training=False)
    from lavis_ib.runners.checkpointing.manager import load_trainable_weights

    with joined(cfg) as info:
        if adopted:
            logger.info("--checkpoint %s trained LoRA adapters: evaluating with %s (from its "
                        "run's config.yaml)", args.checkpoint, adopted)
        _, model, _, runner = build(cfg, info)
        checkpoint = None
        if args.checkpoint:
            checkpoint = load_trainable_weights(model, checkpoint_folder(args.checkpoint))
        results = runner.evaluate(name=name, checkpoint=checkpoint)
        if info.rank == 0:
            model_cfg = cfg.model_cfg
            print(f"metrics of {model_cfg.arch}:{model_cfg.model_type}"
                  + (f" with {checkpoint}" if checkpoint else "")
                  + " (rounded; full precision in eval/<dataset>_<split>/metrics.json):")
            for dataset, metrics in results.items():
                print(f"  {dataset}: {metrics_line(metrics)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main, None, "lavis-ib evaluate"))

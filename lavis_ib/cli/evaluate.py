"""`python -m lavis_ib.evaluate --cfg-path PROJECT.yaml [--checkpoint RUN_OR_CKPT] [--options ...]`.

Evaluates every dataset of the project that has an evaluation split (its `eval_splits`,
else the run's `test_splits`, else `valid_splits`) with the dataset's own task, and writes
`FOLDER/eval/<dataset>_<split>/{predictions.jsonl,metrics.json}` plus a summary
`FOLDER/eval/metrics.json` and FOLDER's own config.yaml and run_info.json. FOLDER is
`run.output_dir`, or `<run.output_dir>/eval/<name>/` when that is a training run's folder
(`--name`, default the project file's name), so a training run's records are never
rewritten. Predictions are appended line by line while a split runs; rerunning the same
evaluation after a kill skips the samples already done. `--checkpoint` loads trainable weights from a
training run (its `checkpoints/best`, else its newest checkpoint) or a checkpoint folder.
Runs in one process, or sharded under torchrun with run.distributed=ddp|fsdp.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Sequence

from lavis_ib.cli.preflight import checked_config
from lavis_ib.cli.entry import project_parser, run_entry
from lavis_ib.common.metrics_text import metrics_line
from lavis_ib.cli.session import adapters_option, build, checkpoint_folder, joined

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
        name = args.name or os.path.splitext(os.path.basename(args.cfg_path))[0]
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

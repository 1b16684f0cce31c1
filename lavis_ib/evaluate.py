"""`python -m lavis_ib.evaluate --cfg-path PROJECT.yaml [--checkpoint RUN_OR_CKPT] [--options ...]`.

Evaluates every dataset of the project that has an evaluation split (its `eval_splits`,
else the run's `test_splits`, else `valid_splits`) with the dataset's own task, and writes
`<run.output_dir>/eval/<name>_<split>/{predictions.jsonl,metrics.json}` plus a summary
`<run.output_dir>/eval/metrics.json`. `--checkpoint` loads trainable weights from a
training run (its `checkpoints/best`, else its newest checkpoint) or a checkpoint folder.
Runs in one process, or sharded under torchrun with run.distributed=ddp|fsdp.
"""
from __future__ import annotations

import json
import sys
from typing import Sequence

from lavis_ib.common.checks import checked_config
from lavis_ib.common.entry import build, checkpoint_folder, joined, project_parser, run_entry


def main(argv: Sequence[str] | None = None) -> int:
    parser = project_parser("python -m lavis_ib.evaluate", "Evaluate a project's eval splits.")
    parser.add_argument("--checkpoint", default=None,
                        help="training run folder or checkpoint folder to load trainable "
                             "weights from")
    args = parser.parse_args(argv)
    cfg = checked_config(args.cfg_path, args.options, training=False)   # pre-flight checks first
    from lavis_ib.runners.checkpoint import load_trainable_weights

    with joined(cfg) as info:
        _, model, _, runner = build(cfg, info)
        if args.checkpoint:
            load_trainable_weights(model, checkpoint_folder(args.checkpoint))
        results = runner.evaluate()
        if info.rank == 0:
            print(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main, None, "python -m lavis_ib.evaluate"))

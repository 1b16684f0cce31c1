"""`lavis-ib demo` (`make demo`): the whole pipeline offline on a CPU, in four stages:
tiny fixture datasets, instruction tuning of `tiny_vicuna`, zero-shot evaluation on held-out
sets beside the tiny BLIP-2 baseline, and the metrics beside the paper's. The tiny model is
random: its numbers only show that every stage runs (docs/getting_started.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

from lavis_ib.common.config import Config
from lavis_ib.cli.entry import run_entry
from lavis_ib.common.paths import package_path

PROJECTS = package_path("configs/projects/instructblip")
TRAIN_PROJECT = os.path.join(PROJECTS, "demo_tiny.yaml")
HELDOUT_PROJECT = os.path.join(PROJECTS, "demo_tiny_heldout.yaml")
BLIP2_PROJECT = package_path("configs/projects/blip2/demo_tiny_heldout_blip2.yaml")


def _stage(title: str) -> float:
    """Head a stage on the console (each stage and step says what it does before it starts,
    and the evaluation command heads each model's metrics with the model's name)."""
    print(f"\n=== {title} ===", flush=True)
    return time.perf_counter()


def _step(text: str) -> None:
    """A line saying what the demo does next (before the slow part starts)."""
    print(f"--- {text}", flush=True)


def _model_name(cfg: Config) -> str:
    return f"{cfg.model_cfg.arch}:{cfg.model_cfg.model_type}"


def _first_prediction(eval_dir: str, folder: str) -> dict | None:
    path = os.path.join(eval_dir, folder, "predictions.jsonl")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        line = f.readline()
    return json.loads(line) if line.strip() else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the four stages; rerunnable: each run moves the previous demo training run aside
    (`run.overwrite`) and evaluates afresh. Metrics print rounded (the files keep every
    digit) and third-party noise stays off the console (`LAVIS_IB_LOG_LEVEL=DEBUG` shows it)."""
    parser = argparse.ArgumentParser(prog="lavis-ib demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg-path", default=TRAIN_PROJECT, help="training project")
    parser.add_argument("--heldout-cfg-path", default=HELDOUT_PROJECT,
                        help="zero-shot evaluation project")
    parser.add_argument("--baseline-cfg-path", default=BLIP2_PROJECT,
                        help="the baseline's zero-shot evaluation project (BLIP-2)")
    parser.add_argument("--data-root", default=os.environ.get("LAVIS_IB_DEMO_DATA",
                                                              "output/demo_data"),
                        help="where the fixture datasets are written")
    args = parser.parse_args(argv)
    os.environ["LAVIS_IB_DEMO_DATA"] = os.path.abspath(args.data_root)  # read by the YAMLs

    from lavis_ib.cli import evaluate, report, train
    from lavis_ib.testing.fixtures import write_fixtures

    t0 = _stage("1/4 fixture data")
    names = [*Config(args.cfg_path).datasets_cfg.keys(),
             *Config(args.heldout_cfg_path).datasets_cfg.keys(),
             *Config(args.baseline_cfg_path).datasets_cfg.keys()]
    write_fixtures(os.environ["LAVIS_IB_DEMO_DATA"], list(dict.fromkeys(names)))
    print(f"wrote {len(set(names))} datasets under {os.environ['LAVIS_IB_DEMO_DATA']} "
          f"({time.perf_counter() - t0:.1f}s)")

    train_cfg = Config(args.cfg_path)
    heldout_cfg = Config(args.heldout_cfg_path)
    baseline_cfg = Config(args.baseline_cfg_path)
    train_dir, eval_run = train_cfg.run_cfg.output_dir, heldout_cfg.run_cfg.output_dir
    heldout = list(heldout_cfg.datasets_cfg.keys())

    t0 = _stage(f"2/4 instruction tuning ({train_cfg.model_cfg.model_type}, "
                f"{train_cfg.run_cfg.max_iters} steps)")
    _step(f"building {_model_name(train_cfg)} and {len(train_cfg.datasets_cfg)} training "
          f"datasets, then training (validation every {train_cfg.run_cfg.val_every} steps)")
    # a rerun of the demo replaces the previous demo run (moved aside, not mixed in)
    train.main(["--cfg-path", args.cfg_path, "--options", "run.overwrite=true"])
    print(f"trained in {time.perf_counter() - t0:.1f}s")

    t0 = _stage("3/4 zero-shot evaluation on held-out fixture datasets")
    _step(f"InstructBLIP {_model_name(heldout_cfg)}, instruction-tuned in 2/4: building it, "
          f"loading {train_dir}, evaluating {', '.join(heldout)} (each split is scored after "
          f"its progress bar: caption metrics start Java and take seconds)")
    evaluate.main(["--cfg-path", args.heldout_cfg_path, "--checkpoint", train_dir])
    blip2_run = baseline_cfg.run_cfg.output_dir
    _step(f"the baseline, BLIP-2 {_model_name(baseline_cfg)} (not instruction-tuned): "
          f"building it, evaluating the same datasets with the same settings")
    evaluate.main(["--cfg-path", args.baseline_cfg_path])
    print(f"evaluated in {time.perf_counter() - t0:.1f}s")

    _stage("4/4 results")
    _step("InstructBLIP beside the paper's numbers, then both models side by side")
    report.main([eval_run, "--compare", "InstructBLIP Vicuna-7B"])
    report.main([eval_run, blip2_run, "--out", os.path.join(eval_run, "report"),
                 "--compare", "InstructBLIP Vicuna-7B", "--compare", "BLIP-2 FlanT5XL"])
    eval_dir = os.path.join(eval_run, "eval")
    sample = _first_prediction(eval_dir, "gqa_test")
    if sample is not None:
        print(f"\nOne generated answer (GQA fixture): Q: {sample.get('question')!r} -> "
              f"A: {sample.get('answer')!r} (references: {sample.get('answers')})")
    print("\nOutputs:")
    print(f"  training run (config, log.jsonl, tb/, checkpoints/): {os.path.abspath(train_dir)}")
    print(f"  held-out predictions and metrics: {os.path.abspath(eval_dir)}")
    print(f"  report (table1.md/.csv/.png; both models: table1_runs.md/.csv/.png): "
          f"{os.path.abspath(os.path.join(eval_run, 'report'))}")
    print("The tiny model is random: these numbers only show that every stage ran.")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main, None, "lavis-ib demo"))

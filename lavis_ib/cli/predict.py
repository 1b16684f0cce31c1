"""`lavis-ib predict`: answer prompts about images and videos, or rank candidate answers.

The command-line face of `lavis_ib.predict`, for files, folders, globs or a JSONL of records;
docs/predict.md shows the calls, what is printed, and the results file a rerun continues."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from lavis_ib.cli.entry import run_entry
from lavis_ib.common.errors import ConfigError
from lavis_ib.models.generation import SHORT_ANSWER
from lavis_ib.predict.run import (PROG, check_output_is_no_input, collect_records, generate_settings,
                                  input_files, log, report, result_settings, run_batches)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0].split(": ")[1])
    p.add_argument("--model", required=True, help="NAME:TYPE, e.g. instructblip:vicuna7b")
    p.add_argument("--options", nargs="+", default=[],
                   help="model config overrides key=value, e.g. pretrained=/path/to/dir")
    src = p.add_argument_group("inputs (any mix; at least one)")
    src.add_argument("paths", nargs="*", metavar="PATH",
                     help="image or video files (by extension), folders, glob patterns")
    src.add_argument("--image", nargs="+", default=[],
                     help="files, folders or globs read as images")
    src.add_argument("--video", nargs="+", default=[],
                     help="files, folders or globs read as videos (4 frames sampled uniformly)")
    src.add_argument("--input", help="JSONL: one {image|video, prompt?, candidates?} per line")
    src.add_argument("--recursive", action="store_true", help="folders: include sub-folders")
    p.add_argument("--prompt", help="the instruction of every input without its own")
    p.add_argument("--candidates",
                   help="rank these answers instead of generating: a,b,c or @FILE (one a line)")
    eos = p.add_mutually_exclusive_group()
    eos.add_argument("--append-eos", dest="append_eos", action="store_const", const=True,
                     help="score EOS after each candidate (default: the model's choice, "
                          "as evaluation: with EOS for FlanT5, without for decoder-only LLMs)")
    eos.add_argument("--no-eos", dest="append_eos", action="store_const", const=False,
                     help="score candidates without EOS after them")
    gen = p.add_argument_group(f"generation (defaults: beam {SHORT_ANSWER.num_beams}, max "
                               f"{SHORT_ANSWER.max_length} tokens, repetition {SHORT_ANSWER.repetition_penalty})")
    for flag, kind in (("num-beams", int), ("max-length", int), ("min-length", int),
                       ("repetition-penalty", float), ("length-penalty", float),
                       ("top-p", float), ("temperature", float)):
        gen.add_argument(f"--{flag}", type=kind)
    gen.add_argument("--use-nucleus-sampling", action="store_const", const=True,
                     help="sample (top_p, temperature) instead of beam search")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds python, numpy and torch before every batch (default 0)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-length-groups", action="store_true",
                   help="batch consecutive inputs (default: inputs of similar prompt length, "
                        "results still in input order)")
    p.add_argument("--output", help="JSONL results file; a rerun resumes it")
    p.add_argument("--overwrite", action="store_true", help="start --output again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    name, sep, model_type = args.model.partition(":")
    if not sep or not name or not model_type:
        raise ConfigError(f"--model '{args.model}': write NAME:TYPE, e.g. instructblip:vicuna7b.")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}.")
    if args.overwrite and not args.output:
        raise ConfigError("--overwrite needs --output.")
    records = collect_records(args)     # everything is checked before the (slow) model load
    if args.output:   # even with --overwrite, an input is never the output
        check_output_is_no_input(args.output, input_files(args, records))
    generate = generate_settings(args, name)

    from lavis_ib.common.project_files import model_overrides
    from lavis_ib.models.loading import check_model_config
    from lavis_ib.predict.batches import make_windows

    overrides = model_overrides(args.options)
    check_model_config(name, model_type, overrides, args.device)   # before --overwrite removes anything
    batches = make_windows(records, args.batch_size, not args.no_length_groups)
    if not args.output:
        counts = run_batches(args, name, model_type, overrides, records, batches, generate, None)
        return report(args, records, counts, None)
    from lavis_ib.predict.output import results_lock

    lock = results_lock(args.output)
    lock.acquire()      # one writer per --output, before --overwrite removes anything
    try:
        return _predict_into(args, name, model_type, overrides, records, batches, generate)
    finally:
        lock.release()


def _predict_into(args, name, model_type, overrides, records, batches, generate) -> int:
    """Predict into the results file `args.output` (resumed where a run stopped)."""
    from lavis_ib.predict.batches import identity
    from lavis_ib.predict.output import ResultsFile

    results = ResultsFile(args.output, result_settings(args, generate, records), args.overwrite)
    results.check_inputs([identity(r) for r in records])
    first = sum(1 for b in batches if b.stop <= len(results.existing))
    results.keep(batches[first - 1].stop if first else 0)
    batches = batches[first:]
    if results.existing:
        log.info("%s: resuming after %d of %d inputs", args.output, len(results.existing),
                 len(records))
    try:
        counts = run_batches(args, name, model_type, overrides, records, batches, generate, results)
    finally:
        results.close()
    return report(args, records, counts, results)


if __name__ == "__main__":
    sys.exit(run_entry(main, None, PROG))

"""Batch prediction's run: generation settings from flags, the input records, the model
load and the batches (a thread reads the next batch's files while the model works), and
the closing count of skipped inputs. The command line is `lavis_ib.cli.predict`.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Sequence

from lavis_ib.common.errors import ConfigError, DataError, LavisIbError
from lavis_ib.models.generation import SHORT_ANSWER, range_problems

log = logging.getLogger("lavis_ib.predict")
PROG = "lavis-ib predict"
# predict's own defaults: the short-answer preset (the model's `generate` defaults are meant
# for long captions); these keys are stored with the results, so a resume checks them
GENERATE_DEFAULTS = SHORT_ANSWER.pick(("num_beams", "max_length", "min_length",
                                       "repetition_penalty"))
GENERATE_FLAGS = ("num_beams", "max_length", "min_length", "repetition_penalty",
                  "length_penalty", "use_nucleus_sampling", "top_p", "temperature")


def generate_settings(args: argparse.Namespace, model_name: str) -> dict[str, Any]:
    """The generation settings to pass: predict's defaults and the given flags, checked
    against what the model class's `generate` accepts before the model is built."""
    from lavis_ib.common.registry import registry

    accepted = registry.get_model_class(model_name).generation_settings()
    given = {k: getattr(args, k) for k in GENERATE_FLAGS if getattr(args, k) is not None}
    unknown = sorted(set(given) - accepted)
    if unknown:
        raise ConfigError(f"--model {args.model}: its generate() takes no "
                          f"{', '.join('--' + k.replace('_', '-') for k in unknown)}; it takes "
                          f"{', '.join(sorted(accepted))}.")
    settings = {**{k: v for k, v in GENERATE_DEFAULTS.items() if k in accepted}, **given}
    check_generate_values(settings)
    return settings


def check_generate_values(settings: dict[str, Any]) -> None:
    """Ranges of the settings (`models.generation.range_problems`), refused here rather
    than at the first batch."""
    problems = range_problems(settings, lambda key: "--" + key.replace("_", "-"))
    if problems:
        raise ConfigError("; ".join(problems) + f" (got {settings}).")


def check_output_is_no_input(output: str, inputs: Sequence[str]) -> None:
    """Appending to (or, with --overwrite, deleting) an input file would destroy it: the
    output, its settings file and its lock must each be another file than every input
    (resolved paths, links followed), checked before anything is written."""
    from lavis_ib.predict.output import lock_path, meta_path

    targets = [output, meta_path(output), lock_path(output)]
    for path in dict.fromkeys(p for p in inputs if p):
        for target in targets:
            if _same_file(path, target):
                raise ConfigError(f"--output '{output}' is the input '{path}'"
                                  + ("" if target == output else f" (as '{target}')")
                                  + "; choose another --output.")


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)    # hard links
    except OSError:                       # one does not exist
        return False


def input_files(args: argparse.Namespace, records) -> list[str]:
    """Every file the run reads: --input, a --candidates @FILE and each record's media."""
    files = [args.input or ""]
    if args.candidates and args.candidates.startswith("@"):
        files.append(args.candidates[1:])
    return files + [r.path for r in records]


def collect_records(args: argparse.Namespace) -> list:
    """Every input as a record, checked (paths exist, JSONL well formed) before loading."""
    from lavis_ib.predict.inputs import jsonl_records, parse_candidates, path_records

    candidates = parse_candidates(args.candidates)
    records = []
    if args.input:
        records += jsonl_records(args.input, args.prompt, candidates)
    for paths, kind in ((args.image, "image"), (args.video, "video"), (args.paths, None)):
        if paths:
            records += path_records(paths, kind, args.prompt, candidates, args.recursive)
    if not records:
        raise ConfigError("no input: give image or video paths, --image, --video or --input.")
    return records


def result_settings(args: argparse.Namespace, generate: dict[str, Any], records) -> dict[str, Any]:
    """What defines the results of a run (stored beside --output; resume checks it). The
    generation settings count only when some input is answered by generation; the length
    grouping only when on (a file of consecutive batches, written before grouping existed,
    resumes with --no-length-groups)."""
    generates = any(r.candidates is None for r in records)
    grouped = {} if args.no_length_groups else {"length_grouped": True}
    return {"model": args.model, "options": list(args.options),
            "generate": generate if generates else None,
            "append_eos": args.append_eos, "seed": args.seed, "batch_size": args.batch_size,
            **grouped}


def run_batches(args, name, model_type, overrides, records, batches, generate, results) -> dict:
    """Load the model, then predict batch after batch (seeded per batch), writing each
    window (`batches.Window`) in input order."""
    from lavis_ib.models.loading import load_model_and_preprocess
    from lavis_ib.predict.batches import print_results

    counts: dict[str, Any] = {"skipped": 0, "done": 0, "first_reason": None}
    if not batches:
        return counts
    model, vis, _ = load_model_and_preprocess(name, model_type, is_eval=True, device=args.device,
                                              **overrides)
    processor = vis.get("eval")
    if processor is None:
        raise LavisIbError(f"model type '{model_type}' has no eval image processor in its config.")
    if results is not None:
        results.start()
    before = model.inference_counts()   # prompts cut to the model's prompt limit, etc.
    for out in predicted_batches(args, model, processor, records, batches, generate):
        if results is not None:
            results.append(out)
        else:
            print_results(out)
        reasons = [f"{r['input']}: {r['skipped']}" for r in out if "skipped" in r]
        counts["first_reason"] = counts["first_reason"] or (reasons[0] if reasons else None)
        counts["skipped"] += len(reasons)
        counts["done"] += len(out)
    counts["cut"] = model.inference_counts().get("num_truncated", 0) - \
        before.get("num_truncated", 0)
    return counts


def predicted_batches(args, model, processor, records, windows, generate):
    """The result records of each window (`batches.Window`) in turn, in input order, with
    a progress bar; the next batch's files are read in a thread while the model works on
    this one."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from lavis_ib.common.seeding import seed_everything
    from lavis_ib.predict.batches import load_media, predict_batch

    calls = [(window, batch) for window in windows for batch in window.batches]
    inputs = [[records[i] for i in batch] for _, batch in calls]
    done: dict[int, dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=1) as reader, \
            tqdm(total=len(records), initial=windows[0].start, unit="input", file=sys.stderr,
                 disable=True if args.no_progress else None, desc=PROG) as bar:
        pending = reader.submit(load_media, inputs[0], processor)
        for k, (window, batch) in enumerate(calls):
            media = pending.result()
            if k + 1 < len(calls):
                pending = reader.submit(load_media, inputs[k + 1], processor)
            seed_everything(args.seed + min(batch))   # a resumed batch draws as it first did
            out = predict_batch(model, inputs[k], media, generate, args.append_eos)
            done.update(zip(batch, out))
            bar.update(len(out))
            if k + 1 == len(calls) or calls[k + 1][0] is not window:
                yield [done.pop(i) for i in range(window.start, window.stop)]


def report(args, records, counts: dict, results) -> int:
    """Log the skipped count; a run where no input at all could be read is an error."""
    earlier = results.existing if results is not None else []
    skipped = counts["skipped"] + sum("skipped" in r for r in earlier)
    if skipped:
        log.warning("%d of %d inputs skipped (unreadable; one line each above%s)", skipped,
                    len(records), ", and records with 'skipped' in " + args.output
                    if args.output else "")
    if counts.get("cut"):
        log.warning("%d prompt(s) cut from the start to the model's prompt limit "
                    "(num_truncated; models.generation.PROMPT_LIMITS)", counts["cut"])
    if args.output:
        log.info("%s: %d records written now, %d kept from before", args.output, counts["done"],
                 len(earlier))
    if skipped == len(records):
        first = counts["first_reason"] or next(
            (f"{r['input']}: {r['skipped']}" for r in earlier if "skipped" in r), "")
        raise DataError(f"no input could be read ({skipped} skipped; {first}).")
    return 0

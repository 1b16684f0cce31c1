"""The evaluation loop shared by training validation and `lavis-ib evaluate`: every split
is scored exactly once whatever the number of processes, unreadable samples are counted
instead of silently shrinking a metric's denominator, and each split leaves its
`predictions.jsonl` and `metrics.json`.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
from typing import Any, Mapping

import torch
from torch.utils.data import Subset

from lavis_ib.common.dist_utils import (GATHER_TIMEOUT_S, all_gather_objects, get_rank,
                                        get_world_size)
from lavis_ib.common.errors import ConfigError, DataError, LavisIbError
from lavis_ib.common.schema import RunConfig
from lavis_ib.common.metrics_text import metrics_line
from lavis_ib.common.precision import autocast_dtype
from lavis_ib.common.registry import registry
from lavis_ib.common.durable_files import write_atomic, write_json_atomic
from lavis_ib.datasets.bad_samples import BadSampleLog
from lavis_ib.runners import eval_order
from lavis_ib.runners.eval_resume import PartialWriter, batch_ids, read_done

logger = logging.getLogger(__name__)
# the least timeout of the evaluation's gathers: COCO caption metrics take minutes on large
# splits on rank 0 while the others wait
EVAL_TIMEOUT_S = GATHER_TIMEOUT_S
#: the run setting's default: evaluation stops above this fraction of unreadable samples
MAX_BAD_FRACTION = RunConfig.max_bad_sample_fraction


def move_to(batch: Any, device: torch.device) -> Any:
    """Tensors in (nested) dicts/lists moved to `device`; everything else unchanged."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in batch):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


def eval_indices(dataset: Any, eval_subset: int | None) -> list[int]:
    """The evaluated indices: all, or a fixed subset (a permutation seeded with 0, first
    `eval_subset` entries, sorted), the same in every run and on every world size."""
    n = len(dataset)
    if not eval_subset or eval_subset >= n:
        return list(range(n))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: int(eval_subset)]
    return sorted(perm.tolist())


class _Subset(Subset):
    """A fixed subset that keeps its dataset's `collater`."""

    def __init__(self, dataset: Any, indices: list[int]) -> None:
        super().__init__(dataset, indices)
        if hasattr(dataset, "collater"):
            self.collater = dataset.collater


def _id_key(value: Any) -> tuple:
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return str(obj)


def evaluate_split(model: Any, task: Any, dataset: Any, name: str, split: str, *,
                   batch_size: int, num_workers: int, device: torch.device,
                   out_dir: str | None, amp: str = "none",
                   eval_subset: int | None = None,
                   timeout_s: int = EVAL_TIMEOUT_S,
                   fingerprint: str | None = None,
                   max_bad_sample_fraction: float = MAX_BAD_FRACTION,
                   length_grouped: bool = True) -> dict[str, float]:
    """Evaluate one split; returns its metrics on every rank (rank 0 computes them).

    Three steps: `run_shard` (this rank's contiguous shard of the split or of its fixed
    `eval_subset`, cut without overlap or padding by `lavis_ib.datasets.loaders.eval_loader`),
    `gather_records` (all ranks' records, de-duplicated and counted: every sample is scored
    exactly once) and `report_split` (rank 0). Unreadable samples (the dataset's
    `BadSample`) are logged once per file; too many of them stop the evaluation on every
    rank before any metric is computed (`check_bad_fraction`). Records and metrics travel
    through `all_gather_objects`; without a process group it is a plain loop.

    Args:
        model: the unwrapped model (eval mode; under FSDP the caller gathers its shards
            first, `Strategy.eval_mode`, so ranks may run different numbers of batches
            and generation steps).
        task: the dataset's evaluation task.
        dataset: a map-style dataset with `collater`.
        out_dir: folder for predictions.jsonl and metrics.json (rank 0 writes), or None.
        amp: autocast dtype name (bf16 | fp16 | none).
        eval_subset: evaluate a fixed subset of this many samples.
        timeout_s: timeout of the gathers (raised to at least EVAL_TIMEOUT_S).
        fingerprint: what is evaluated; with `out_dir`, records are appended to partial
            files as they come and a rerun with the same fingerprint skips done ids.
        max_bad_sample_fraction: the largest fraction of the evaluated samples that may be
            unreadable (`run.max_bad_sample_fraction`).
        length_grouped: batch samples of similar prompt length together (the dataset's
            `length_grouped` setting); the records are the same either way.

    Raises:
        DataError: more unreadable samples than `max_bad_sample_fraction` allows.
    """
    indices = eval_indices(dataset, eval_subset)
    done = read_done(out_dir, fingerprint)
    writer = PartialWriter(out_dir, fingerprint, get_rank())
    before = model.inference_counts()   # e.g. prompts cut to fit (batches run here only)
    try:
        records, bad = run_shard(model, task, dataset, indices, batch_size=batch_size,
                                 num_workers=num_workers, device=device, amp=amp,
                                 done=done, writer=writer, desc=f"{name}/{split}",
                                 length_grouped=length_grouped)
    finally:
        writer.close()
    counts = {k: v - before.get(k, 0) for k, v in model.inference_counts().items()}
    ordered, all_bad = gather_records(task, records, bad, len(indices), f"{name}/{split}",
                                      timeout_s)
    check_bad_fraction(f"{name}/{split}", len(all_bad), len(indices), max_bad_sample_fraction)
    counts = {k: sum(rank[k] for rank in all_gather_objects(counts, timeout_s)) for k in counts}
    metrics: dict[str, float] = {}
    if get_rank() == 0:
        metrics = report_split(task, ordered, all_bad, dataset, out_dir, f"{name}/{split}",
                               counts)
    return all_gather_objects(metrics, timeout_s)[0]


def run_shard(model: Any, task: Any, dataset: Any, indices: list[int], *, batch_size: int,
              num_workers: int, device: torch.device, amp: str = "none",
              done: dict[Any, dict[str, Any]] | None = None, writer: Any = None,
              desc: str = "eval", length_grouped: bool = True
              ) -> tuple[list[dict[str, Any]], list[str]]:
    """(records, unreadable files) of this rank's shard of `dataset[indices]`; a batch
    whose ids are all in `done` reuses those records; new records go to `writer`.
    `desc` names the progress bar (rank 0's only). With `length_grouped` the batches hold
    prompts of similar length (`shard_loader`)."""
    source = dataset if len(indices) == len(dataset) else _Subset(dataset, indices)
    loader = shard_loader(model, task, dataset, indices, source, batch_size=batch_size,
                          num_workers=num_workers, length_grouped=length_grouped, desc=desc)
    dtype = autocast_dtype(amp)
    task.before_evaluation(model, dataset)  # e.g. a ranking task takes the answer_list
    records: list[dict[str, Any]] = []
    bad: list[str] = []
    badlog = BadSampleLog(f"{desc} evaluation")   # one warning per file, with its reason
    for batch in progress(loader, desc):
        bad.extend(batch.get("_bad_files", []))
        badlog.add(batch)
        if batch.get("_num_requested", 1) == len(batch.get("_bad_files", [])):
            continue
        ids = batch_ids(batch) if done else None
        if ids and all(i in done for i in ids):
            records.extend(done[i] for i in ids)
            continue
        batch = move_to(batch, device)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            new = task.valid_step(model, batch)
        records.extend(new)
        if writer is not None:
            writer.write(new)
    return records, bad


def shard_loader(model: Any, task: Any, dataset: Any, indices: list[int], source: Any, *,
                 batch_size: int, num_workers: int, length_grouped: bool,
                 desc: str) -> Any:
    """This rank's loader over `source` (= `dataset[indices]`): batches grouped by prompt
    length (`eval_order.grouped_batches`; one log line says how much prompt padding that
    saves), else the contiguous shard in dataset order (`eval_loader`). Grouping is left
    off, with a log line, where the prompts cannot be read without the images or where
    the task's scores depend on which samples share a batch."""
    from torch.utils.data import DataLoader

    from lavis_ib.datasets.loaders import eval_loader, eval_shard

    rank, world = get_rank(), get_world_size()
    plain = lambda: eval_loader(source, batch_size, rank, world,   # noqa: E731
                                num_workers=num_workers)
    if not length_grouped:
        return plain()
    why = eval_order.batch_dependent(task, model)
    lengths = None
    if not why:
        lengths, why = eval_order.prompt_lengths(task, dataset, indices)
    if lengths is not None and len(set(lengths)) < 2:
        lengths, why = None, "every prompt has the same length"
    if lengths is None:
        if rank == 0:
            logger.info("%s: batches in dataset order (not grouped by prompt length: %s)",
                        desc, why)
        return plain()
    loader = plain()     # checks batch_size and world size, as in dataset order
    batches = eval_order.grouped_batches(lengths, batch_size, rank, world)
    if rank == 0:
        shard = list(eval_shard(len(lengths), rank, world))
        before = [shard[i:i + batch_size] for i in range(0, len(shard), batch_size)]
        logger.info("%s: %d batches grouped by prompt length; prompt padding %.0f%% of "
                    "characters (%.0f%% in dataset order)", desc, len(batches),
                    100 * eval_order.padded_share(lengths, batches),
                    100 * eval_order.padded_share(lengths, before))
    return DataLoader(source, batch_sampler=batches, collate_fn=loader.collate_fn,
                      num_workers=num_workers, pin_memory=loader.pin_memory)


def progress(loader: Any, desc: str) -> Any:
    """`loader` wrapped in a tqdm bar on rank 0 (stderr, cleared when done, so the log
    reads on); other ranks and `LAVIS_IB_NO_PROGRESS=1` get the bare loader."""
    if get_rank() != 0 or os.environ.get("LAVIS_IB_NO_PROGRESS") == "1":
        return loader
    from tqdm.auto import tqdm

    try:
        total = len(loader)
    except TypeError:  # an iterable loader: the bar counts without a total
        total = None
    return tqdm(loader, desc=desc, total=total, unit="batch", file=sys.stderr, leave=False,
                dynamic_ncols=True)


def gather_records(task: Any, records: list[dict[str, Any]], bad: list[str], expected: int,
                   where: str, timeout_s: int = EVAL_TIMEOUT_S
                   ) -> tuple[list[dict[str, Any]], list[str]]:
    """All ranks' records, de-duplicated by `id` and sorted, and all unreadable files.

    Raises:
        LavisIbError: a record without `id`, or unique ids + unreadable != `expected`.
    """
    unique: dict[Any, dict[str, Any]] = {}
    all_bad: list[str] = []
    for rank_records, rank_bad in all_gather_objects((records, bad), timeout_s):
        all_bad.extend(rank_bad)
        for record in rank_records:
            if "id" not in record:
                raise LavisIbError(f"{type(task).__name__}.valid_step returned a record without "
                                   f"'id' for {where}.")
            unique.setdefault(record["id"], record)
    if len(unique) + len(all_bad) != expected:
        raise LavisIbError(
            f"{where}: {len(unique)} unique ids and {len(all_bad)} unreadable samples "
            f"for {expected} samples; sample ids (question_id/instance_id) must be unique "
            f"and valid_step must return one record per sample.")
    return sorted(unique.values(), key=lambda r: _id_key(r["id"])), all_bad


def check_bad_fraction(where: str, bad: int, total: int, limit: float) -> None:
    """Raise when more than `limit` of the `total` evaluated samples were unreadable (the
    metric would be taken over a different set of samples than the split's)."""
    if total and bad > limit * total:
        raise DataError(
            f"{where}: {bad} of {total} samples ({bad / total:.1%}) could not be read, more "
            f"than run.max_bad_sample_fraction = {limit:g}; the metric would leave them out. "
            f"Fix or remove the files (lavis-ib data check PROJECT --decode lists them) or "
            f"raise the limit.")


def report_split(task: Any, records: list[dict[str, Any]], bad: list[str], dataset: Any,
                 out_dir: str | None, where: str,
                 counts: Mapping[str, int] | None = None) -> dict[str, float]:
    """The split's metrics (rank 0), written with the predictions to `out_dir`; `counts`
    are the model's inference counts over the split (e.g. `num_truncated`).
    `num_unreadable` is always written (0 included): the metrics cover `num_samples` of
    the `num_samples + num_unreadable` samples evaluated. The log line rounds the metrics
    to two decimals (`metrics_line`); the JSON files keep full precision."""
    logger.info("%s: scoring %d predictions (%s)", where, len(records), type(task).__name__)
    check_finite_records(records, where)
    metrics = dict(task.metrics(records, dataset))
    check_finite_metrics(metrics, where)
    metrics["num_samples"] = len(records)
    metrics["num_unreadable"] = len(bad)
    if bad:
        logger.warning("%s: %d of %d samples unreadable (%d files, each logged above): the "
                       "metrics are over the %d others (num_unreadable in metrics.json)",
                       where, len(bad), len(records) + len(bad), len(set(map(str, bad))),
                       len(records))
    metrics.update(counts or {})
    if (counts or {}).get("num_truncated"):
        logger.warning("%s: %d prompts were cut from the left to the model's prompt limit "
                       "(num_truncated in metrics.json)", where, counts["num_truncated"])
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        write_atomic(os.path.join(out_dir, "predictions.jsonl"), "".join(
            json.dumps(record, default=_json_default) + "\n" for record in records))
        write_json_atomic(os.path.join(out_dir, "metrics.json"), metrics, default=_json_default)
        submit = getattr(task, "write_submission", None)   # a server's file, for a test split
        if submit is not None:
            submit(records, dataset, out_dir)
    logger.info("%s: %s", where, metrics_line(metrics))
    return metrics


class NonFiniteScoresError(LavisIbError):
    """An evaluation's predictions or metrics hold NaN: the model's outputs are not
    numbers, so no metric of them is reported."""


_ADVICE = ("the model's outputs are not finite (NaN weights, or an overflow in fp16); no "
           "metric is reported. Check the weights (lavis-ib evaluate --checkpoint refuses a "
           "checkpoint holding NaN) or evaluate with run.amp=none.")


def _nan_field(value: Any, name: str = "") -> str | None:
    """The name of the first NaN in a record's (nested) values, else None."""
    if isinstance(value, float):
        return name if math.isnan(value) else None
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return name if bool(torch.isnan(value).any()) else None
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for key, inner in items:
        found = _nan_field(inner, f"{name}.{key}" if name else str(key))
        if found is not None:
            return found
    return None


def check_finite_records(records: list[dict[str, Any]], where: str) -> None:
    """Raise `NonFiniteScoresError` (one line) when a prediction record holds a NaN
    score, before a metric is computed from it."""
    bad = [(r.get("id"), field) for r in records
           for field in [_nan_field(r)] if field is not None]
    if bad:
        raise NonFiniteScoresError(
            f"{where}: {len(bad)} of {len(records)} predictions hold NaN scores (e.g. id "
            f"{bad[0][0]!r}, field '{bad[0][1]}'); {_ADVICE}")


def check_finite_metrics(metrics: Mapping[str, Any], where: str) -> None:
    """Raise `NonFiniteScoresError` when a computed metric is NaN or infinite."""
    bad = [k for k, v in metrics.items()
           if isinstance(v, (int, float)) and not math.isfinite(float(v))]
    if bad:
        raise NonFiniteScoresError(f"{where}: the metrics {bad} are not finite; {_ADVICE}")


def eval_splits(name: str, ds_cfg: Mapping[str, Any], available: Mapping[str, Any],
                default: list[str]) -> list[str]:
    """The splits of dataset `name` to evaluate: `eval_splits` from its entry (`[]`: none),
    else the `default` splits it has."""
    wanted = ds_cfg.get("eval_splits")
    if wanted is not None:  # [] means: do not evaluate this dataset
        wanted = [wanted] if isinstance(wanted, str) else list(wanted)
        missing = [s for s in wanted if s not in available]
        if missing:
            raise ConfigError(f"datasets.{name}.eval_splits: {missing} not built; the dataset "
                              f"has splits {sorted(available)}.")
        return wanted
    return [s for s in default if s in available]


def evaluate_datasets(model: Any, datasets: Mapping[str, Mapping[str, Any]],
                      datasets_cfg: Mapping[str, Any], default_splits: list[str], *,
                      batch_size: int, num_workers: int, device: torch.device,
                      out_root: str | None, amp: str = "none",
                      timeout_s: int = EVAL_TIMEOUT_S,
                      only: list[str] | None = None,
                      fingerprint: str | None = None,
                      max_bad_sample_fraction: float = MAX_BAD_FRACTION
                      ) -> dict[str, dict[str, float]]:
    """Evaluate every dataset split that has an evaluation task: each entry's
    `eval_splits`, else `default_splits`; with `only` (training validation), just those
    of them in `only`. The entry's task (`datasets.<name>.task`) is built with
    `for_dataset`, which checks it against the model's class.

    Returns:
        {"<name>" (first split) or "<name>_<split>": metrics}; a dataset with eval splits
        but no `task` is skipped with a warning.
    """
    results: dict[str, dict[str, float]] = {}
    for name, splits in datasets.items():
        ds_cfg = datasets_cfg[name]
        chosen = eval_splits(name, ds_cfg, splits, default_splits)
        if only is not None:
            chosen = [s for s in chosen if s in only]
        if not chosen:
            continue
        if not ds_cfg.get("task"):
            logger.warning("datasets.%s has eval splits %s but no 'task': not evaluated",
                           name, chosen)
            continue
        task = registry.get_task_class(ds_cfg.task).for_dataset(name, ds_cfg, model_cls=type(model))
        subset = ds_cfg.get("eval_subset")
        for i, split in enumerate(chosen):
            out_dir = os.path.join(out_root, f"{name}_{split}") if out_root else None
            metrics = evaluate_split(model, task, splits[split], name, split,
                                     batch_size=batch_size, num_workers=num_workers,
                                     device=device, out_dir=out_dir, amp=amp,
                                     eval_subset=subset, timeout_s=timeout_s,
                                     fingerprint=fingerprint,
                                     max_bad_sample_fraction=max_bad_sample_fraction,
                                     length_grouped=eval_order.wanted(task))
            results[name if i == 0 else f"{name}_{split}"] = metrics
    return results


def select_score(results: Mapping[str, Mapping[str, float]], select_metric: list[str]) -> float:
    """Mean of the listed "dataset.metric" values.

    Raises:
        ConfigError: a listed metric was not produced (naming what was).
    """
    values = []
    for item in select_metric:
        name, _, metric = str(item).partition(".")
        if name not in results or metric not in results[name]:
            have = [f"{n}.{m}" for n, ms in results.items() for m in ms]
            raise ConfigError(f"run.select_metric '{item}' was not computed; computed: "
                              f"{', '.join(have) or '(nothing)'}.")
        values.append(float(results[name][metric]))
    return sum(values) / len(values)

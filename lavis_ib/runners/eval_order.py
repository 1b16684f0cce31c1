"""The batches of an evaluation split, grouped by prompt length: a batch pads its prompts
to its longest, so batching prompts of similar length instead of neighbours in file order
saves the LLM positions spent on padding. Records are gathered by id afterwards, so the
grouping changes the work, never the predictions file (docs/evaluation.md)."""
from __future__ import annotations

import logging
from typing import Any, Sequence

from lavis_ib.common.errors import LavisIbError

logger = logging.getLogger(__name__)


def wanted(task: Any) -> bool:
    """The dataset's `length_grouped` setting (default on)."""
    settings = getattr(task, "eval_settings", None)
    return getattr(settings, "length_grouped", None) is not False


def prompt_lengths(task: Any, dataset: Any, indices: Sequence[int]) -> tuple[list[int] | None, str]:
    """(characters of each sample's prompt as `task` fills it, ""), or (None, why not).

    A sample's text is built without its image (the dataset's `build_sample` with no
    visual, the contract of `BaseDataset`), so no file is read. Characters stand in for
    tokens: they need no tokenizer, are the same in every process and follow the token
    count closely enough to group by.
    """
    prompts = getattr(task, "prompts", None)
    build = getattr(dataset, "build_sample", None)
    annotation = getattr(dataset, "annotation", None)
    if prompts is None:
        return None, f"{type(task).__name__} builds no prompts"
    if build is None or annotation is None:
        return None, f"{type(dataset).__name__} has no annotation/build_sample to read texts from"
    from lavis_ib.datasets.datasets.base import collate

    lengths = []
    try:
        for i in indices:
            sample = build(annotation[i], None, i, 0)
            lengths.append(len(prompts(collate([sample]))[0]))
    except (LavisIbError, KeyError, IndexError, TypeError, ValueError) as exc:
        return None, f"the prompt of sample {i} could not be built without its image ({exc})"
    return lengths, ""


def batch_dependent(task: Any, model: Any) -> str:
    """Why `task`'s records depend on which samples share a batch (grouping would then
    change them), or ""."""
    settings = getattr(task, "eval_settings", None)
    if settings is None or settings.inference != "rank":
        return ""
    family = getattr(model, "llm_family", "")
    try:
        aggregate = settings.aggregate_for(family)
    except LavisIbError:
        return ""   # the first batch raises the same error, naming the setting
    if aggregate == "lavis_segment_mean":
        return ("aggregate lavis_segment_mean divides by the batch's padded prompt length, "
                "as LAVIS does, so its scores follow the dataset-order batches")
    return ""


def grouped_batches(lengths: Sequence[int], batch_size: int, rank: int,
                    world_size: int) -> list[list[int]]:
    """This rank's batches (positions into `lengths`), longest prompts first.

    The positions are sorted by (length descending, position), rank r takes every
    world_size-th of them from the r-th on (shards differ by at most one sample and hold
    alike lengths, so ranks finish together), and cuts its share into batches in that
    order. Depends only on the lengths, so every process computes the same split.
    """
    order = sorted(range(len(lengths)), key=lambda p: (-lengths[p], p))
    mine = order[rank::world_size]
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]


def padded_share(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """The share of prompt characters that are padding when each batch pads to its
    longest prompt (0 for no batches)."""
    total = sum(max(lengths[p] for p in b) * len(b) for b in batches if b)
    used = sum(lengths[p] for b in batches for p in b)
    return (total - used) / total if total else 0.0

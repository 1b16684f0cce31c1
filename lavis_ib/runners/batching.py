"""The batching of an optimizer step: global batch, per-device micro-batch and accumulation
steps, derived from the run settings and the world size, and the split of a rank's share
by a token budget (`token_budget_split`). Plain arithmetic (no torch), so the pre-flight
can compare a resumed run's global batch before anything is built.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from lavis_ib.common.errors import ConfigError

if TYPE_CHECKING:
    from lavis_ib.common.schema import RunConfig


def derive_batching(run: RunConfig, world_size: int) -> tuple[int, int, int]:
    """(global batch, per-device micro-batch, accumulation steps) of `run` (the typed
    RunConfig) for this world size.

    `global_batch_size` fixes the optimizer's batch; `batch_size_train` is the largest
    micro-batch a device takes; accumulation fills the gap. Without `global_batch_size`
    the LAVIS rule applies: batch_size_train x world_size x accum_grad_iters.

    Raises:
        ConfigError: a global batch no split of the world size can produce.
    """
    micro, accum, glob = run.batch_size_train, run.accum_grad_iters, run.global_batch_size
    if glob is None:
        accum = accum or 1
        return micro * world_size * accum, micro, accum
    if glob % world_size:
        raise ConfigError(f"run.global_batch_size={glob} is not divisible by the {world_size} "
                          f"processes; choose a multiple of {world_size}.")
    per_rank = glob // world_size
    if accum:
        if per_rank % accum:
            raise ConfigError(f"run.global_batch_size={glob} over {world_size} processes x "
                              f"accum_grad_iters={accum} leaves a fractional micro-batch; unset "
                              f"run.accum_grad_iters to derive it.")
        return glob, per_rank // accum, accum
    accum = max(1, math.ceil(per_rank / micro))
    while per_rank % accum:
        accum += 1
    return glob, per_rank // accum, accum


def padded_positions(counts: Sequence[int], group: Sequence[int]) -> int:
    """LLM positions of `group` (positions into `counts`) padded to its longest sample."""
    return len(group) * max((int(counts[i]) for i in group), default=0)


def token_budget_split(counts: Sequence[int], budget: int,
                       parts: int | None = None) -> list[list[int]]:
    """Micro-batches of a rank's samples under a token budget (`run.max_tokens_per_micro_batch`).

    The samples are taken longest first (ties: in their order); each micro-batch takes the
    next samples while (its samples) x (its longest sample) stays within `budget`, the
    positions of the micro-batch padded to its longest, which also bounds it packed. A
    sample longer than the budget alone is a micro-batch of one. With `parts` (the largest
    count any rank needs, so that every rank runs as many micro-steps), the micro-batch
    with the most padded positions among those of 2+ samples is halved (longer half first)
    until there are `parts`. A pure function of (counts, budget, parts): the same on every
    run and resume.

    Args:
        counts: each sample's token count, in the rank's sample order.
        budget: positions per micro-batch (>= 1).
        parts: the number of micro-batches wanted; None: as few as the budget allows.

    Returns:
        Lists of sample positions (ascending within each), longest micro-batch first;
        every position exactly once.

    Raises:
        ValueError: `parts` below the greedy count or above the number of samples.
    """
    if budget < 1:
        raise ValueError(f"token budget must be >= 1, got {budget}")
    groups: list[list[int]] = []
    for i in sorted(range(len(counts)), key=lambda k: (-int(counts[k]), k)):
        if groups and (len(groups[-1]) + 1) * int(counts[groups[-1][0]]) <= budget:
            groups[-1].append(i)
        else:
            groups.append([i])
    if parts is not None:
        if not len(groups) <= parts <= len(counts):
            raise ValueError(f"cannot split {len(counts)} samples into {parts} micro-batches "
                             f"under the budget (at least {len(groups)} needed)")
        while len(groups) < parts:
            k = max((g for g in range(len(groups)) if len(groups[g]) > 1),
                    key=lambda g: (padded_positions(counts, groups[g]), -g))
            half = len(groups[k]) // 2
            groups[k:k + 1] = [groups[k][:half], groups[k][half:]]
    return [sorted(g) for g in groups]

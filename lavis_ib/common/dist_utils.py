"""Rank and world-size helpers that work with and without a process group.

Everything here is safe in a plain single process: no barrier or collective is issued
unless a process group is initialised (LAVIS calls `dist.barrier()` unconditionally).
"""
from __future__ import annotations

from typing import Any

import torch.distributed as dist

GATHER_TIMEOUT_S = 1800
_GROUPS: dict[int, Any] = {}


def is_dist_avail_and_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist_avail_and_initialized():
        dist.barrier()


def _gather_group(timeout_s: int) -> Any:
    """The gloo group of object gathers (one per default process group)."""
    import datetime

    key = id(dist.distributed_c10d._get_default_group())
    if key not in _GROUPS:  # every rank reaches the first gather together
        _GROUPS[key] = dist.new_group(backend="gloo",
                                      timeout=datetime.timedelta(seconds=timeout_s))
    return _GROUPS[key]


def all_gather_objects(obj: Any, timeout_s: int = GATHER_TIMEOUT_S) -> list[Any]:
    """Every rank's `obj`, in rank order; `[obj]` without a process group.

    Objects travel through a separate gloo group whose timeout is at least
    `GATHER_TIMEOUT_S`: ranks wait there for the slowest evaluation shard and for rank 0's
    metrics, which must not trip the default group's short timeout (that one makes
    training hangs fail fast).
    """
    if not is_dist_avail_and_initialized():
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj,
                           group=_gather_group(max(int(timeout_s), GATHER_TIMEOUT_S)))
    return gathered

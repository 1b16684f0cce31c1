"""Rank and world-size helpers that work with and without a process group.

Everything here is safe in a plain single process: no barrier or collective is issued
unless a process group is initialised (LAVIS calls `dist.barrier()` unconditionally).
"""
from __future__ import annotations

from typing import Any

import torch.distributed as dist


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


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order; `[obj]` without a process group."""
    if not is_dist_avail_and_initialized():
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered

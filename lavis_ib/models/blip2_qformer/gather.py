"""Cross-rank gathers of BLIP-2 stage 1: the world batch every rank's losses look at.

Ranks may hold different numbers of samples (unreadable images are dropped from a
micro-batch), so the gathers pad and cut rows rather than assume equal shards (`gather_rows`)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def exchange(values: Sequence[int], device: torch.device) -> list[list[int]]:
    """Every rank's small list of integers, in rank order (one collective)."""
    mine = torch.tensor([list(values)], dtype=torch.long, device=device)
    _, size = world()
    if size == 1:
        return mine.tolist()
    parts = [torch.empty_like(mine) for _ in range(size)]
    dist.all_gather(parts, mine)
    return torch.cat(parts).tolist()


def gather_rows(tensor: torch.Tensor, sizes: Sequence[int], with_grad: bool) -> torch.Tensor:
    """The rows of every rank concatenated in rank order; `sizes[r]` rows come from rank r.

    Rows are padded to the largest rank before `all_gather` and cut back after.
    `with_grad=True` uses `torch.distributed.nn.functional.all_gather`, whose backward sums
    every rank's gradient into the rank that owns the rows; `with_grad=False` is a plain
    gather (no gradient flows to another rank's rows). Without a process group the input
    comes back.
    """
    if len(sizes) == 1:
        return tensor
    longest = max(sizes)
    if tensor.shape[0] < longest:
        pad = tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))
        tensor = torch.cat([tensor, pad])
    tensor = tensor.contiguous()
    if with_grad:
        from torch.distributed.nn.functional import all_gather

        parts = all_gather(tensor)
    else:
        with torch.no_grad():
            parts = [torch.empty_like(tensor) for _ in sizes]
            dist.all_gather(parts, tensor)
    return torch.cat([part[:n] for part, n in zip(parts, sizes)])

"""The batching of an optimizer step: global batch, per-device micro-batch and accumulation
steps, derived from the run settings and the world size. Plain arithmetic (no torch), so
the pre-flight can compare a resumed run's global batch before anything is built.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

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

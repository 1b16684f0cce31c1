"""Checkpoint weights are checked finite when they are loaded (resume, evaluate, export).

A run never saves NaN or inf weights (its guard stops first), so a checkpoint that holds
them was damaged or doctored and re-sealed; it is refused by name instead of being
exported or evaluated into metrics of NaN scores."""
from __future__ import annotations

import os
from typing import Any, Mapping

import torch
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from lavis_ib.common.dist_utils import all_gather_objects
from lavis_ib.common.errors import LavisIbError
from lavis_ib.runners.checkpointing.safe_load import (SafeFileSystemReader, dcp_load,
                                                            raise_unsafe)


class NonFiniteCheckpointError(LavisIbError):
    """A checkpoint's weights hold NaN or inf values; nothing was loaded from it."""


def non_finite(state: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors of `state` (nested dicts too: optimizer
    state) holding a NaN or an inf."""
    bad = []
    for name, value in state.items():
        if isinstance(value, Mapping):
            bad += [f"{name}.{inner}" for inner in non_finite(value)]
            continue
        local = value.to_local() if hasattr(value, "to_local") else value  # FSDP2: this shard
        if (isinstance(local, torch.Tensor) and local.is_floating_point()
                and not bool(torch.isfinite(local).all())):
            bad.append(str(name))
    return bad


def problem(path: str, bad: list[str], total: int, what: str = "trainable") -> str:
    return (f"checkpoint '{path}' holds non-finite weights: {len(bad)} of {total} {what} "
            f"tensors have NaN or inf values (e.g. {sorted(bad)[:3]}); it was not loaded")


def check_finite(state: Mapping[str, Any], path: str, what: str = "trainable") -> None:
    """Raise `NonFiniteCheckpointError` (one line naming `path`) when `state`, just read
    from the checkpoint `path`, holds a NaN or an inf; under a process group every rank
    looks at its shards and all raise together."""
    bad = sorted({name for rank in all_gather_objects(non_finite(state)) for name in rank})
    if bad:
        raise NonFiniteCheckpointError(
            f"{problem(path, bad, len(state), what)}. Give another checkpoint (an earlier "
            f"checkpoints/step_* folder).")


def weights_problem(path: str) -> str | None:
    """Why the weights in `path`/model are not usable (NaN or inf values), else None; read
    without a model, each tensor built from the checkpoint's own index."""
    folder = os.path.join(path, "model")
    index = SafeFileSystemReader(folder).read_metadata().state_dict_metadata
    state = {name: torch.empty(tuple(md.size), dtype=md.properties.dtype)
             for name, md in index.items() if isinstance(md, TensorStorageMetadata)}
    try:
        dcp_load(state, folder, single=True)
    except (Exception, CheckpointException) as exc:
        raise_unsafe(exc)
        return f"the weights in {folder} cannot be read ({type(exc).__name__})"
    bad = non_finite(state)
    return problem(path, bad, len(state)) if bad else None

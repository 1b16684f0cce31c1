"""Training checkpoints: trainable weights, optimizer, scheduler, data-mixer state, RNG and
step, written atomically with torch.distributed.checkpoint (DCP).

Layout of `<output_dir>/checkpoints/`:

    step_00003000/        one complete checkpoint (only complete ones carry this name)
        model/            DCP: trainable parameters only (no frozen ViT/LLM weights)
        optim/            DCP: AdamW state, keyed by parameter name
        rank_<r>.pt       that rank's RNG states and data-loader state
        trainer.pt        step, scheduler, grad scaler, best score, world size
        meta.json         written last: step, world size, strategy, package version
    best/                 model/ + meta.json of the best validation score
    .tmp-*                an interrupted write; ignored, removed by the next save

A checkpoint is written into a `.tmp-*` folder and renamed when complete, so a process
killed mid-write leaves the previous checkpoint usable. DCP writes each rank's shards,
so the same code serves `none`, `ddp` and `fsdp`, and a checkpoint loads under any of
them (DCP reshards). Loading is non-strict only for frozen parameters, with a report.

Fault injection for tests (environment variables, off when unset):
    LAVIS_IB_FAULT_AFTER_STEP=k       the process exits (code 13) after step k is done
    LAVIS_IB_FAULT_IN_CHECKPOINT=k    the process exits while writing the step-k checkpoint
    LAVIS_IB_FAULT_BEFORE_VALIDATION=k  exits after the step-k checkpoint, before validating
                                      it (the resumed run validates it first)
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import shutil
import warnings
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_state_dict,
                                                     set_state_dict)

from lavis_ib.common.dist_utils import barrier, get_rank
from lavis_ib.common.errors import ConfigError, LavisIbError

logger = logging.getLogger(__name__)
_STEP_DIR = re.compile(r"^step_(\d+)$")
FAULT_EXIT_CODE = 13


def maybe_fault(variable: str, step: int) -> None:
    """Exit the process at once (no cleanup) when the fault variable names this step."""
    value = os.environ.get(variable)
    if value is not None and value.strip() and int(value) == step:
        logger.error("fault injection: %s=%s, exiting", variable, value)
        os._exit(FAULT_EXIT_CODE)


# -- RNG -------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- state dicts -----------------------------------------------------------------------
def trainable_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def frozen_names(model: nn.Module) -> set[str]:
    # every name of a tied weight (T5's embed_tokens / shared, OPT's lm_head), as in state_dict
    return {n for n, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}


def _state_dicts(model: nn.Module, inner: nn.Module, optimizer: Any) -> tuple[dict, dict]:
    opts = StateDictOptions(ignore_frozen_params=True)
    model_sd, optim_sd = get_state_dict(model, optimizer, options=opts)
    keep = trainable_names(inner)
    return {k: v for k, v in model_sd.items() if k in keep}, optim_sd


@contextlib.contextmanager
def _quiet_single_process() -> Iterator[None]:
    """DCP warns on every call without a process group; one process is intended here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _dcp_reason(exc: BaseException) -> str:
    """The first rank's underlying error of a DCP failure, in one line."""
    failures = getattr(exc, "failures", None)  # CheckpointException: {rank: (exc, traceback)}
    if failures:
        first = next(iter(failures.values()))
        exc = first[0] if isinstance(first, tuple) else first
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _write_json(path: str, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


class CheckpointManager:
    """Saves and restores training state under `<output_dir>/checkpoints`.

    Args:
        output_dir: the run folder.
        keep_last: newest step checkpoints kept (the best one is kept apart).
        rank, world_size: this process's place.
    """

    def __init__(self, output_dir: str, keep_last: int, rank: int = 0, world_size: int = 1) -> None:
        self.root = os.path.join(output_dir, "checkpoints")
        self.keep_last = max(int(keep_last), 1)
        self.rank, self.world_size = rank, world_size

    # -- discovery --------------------------------------------------------------------
    def complete(self) -> list[tuple[int, str]]:
        """(step, path) of every complete step checkpoint, oldest first."""
        return list_checkpoints(self.root)

    def latest(self) -> str | None:
        found = self.complete()
        return found[-1][1] if found else None

    # -- saving -----------------------------------------------------------------------
    def save(self, step: int, model: nn.Module, inner: nn.Module, optimizer: Any,
             trainer_state: dict[str, Any], loader_state: Any, meta: dict[str, Any]) -> str:
        """Write the checkpoint of `step` atomically; returns its path (every rank calls)."""
        final = os.path.join(self.root, f"step_{step:08d}")
        tmp = os.path.join(self.root, f".tmp-step_{step:08d}")
        if self.rank == 0:
            os.makedirs(self.root, exist_ok=True)
            for name in os.listdir(self.root):  # leftovers of an interrupted write
                if name.startswith(".tmp-"):
                    shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)
            os.makedirs(tmp)
        barrier()
        model_sd, optim_sd = _state_dicts(model, inner, optimizer)
        single = not dist.is_initialized()
        with _quiet_single_process():
            dcp.save(model_sd, checkpoint_id=os.path.join(tmp, "model"), no_dist=single)
            maybe_fault("LAVIS_IB_FAULT_IN_CHECKPOINT", step)
            dcp.save(optim_sd, checkpoint_id=os.path.join(tmp, "optim"), no_dist=single)
        torch.save({"rng": rng_state(), "loader": loader_state},
                   os.path.join(tmp, f"rank_{self.rank}.pt"))
        barrier()
        if self.rank == 0:
            torch.save({**trainer_state, "world_size": self.world_size},
                       os.path.join(tmp, "trainer.pt"))
            _write_json(os.path.join(tmp, "meta.json"),
                        {**meta, "step": step, "world_size": self.world_size, "complete": True})
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(tmp, final)
            self._prune()
        barrier()
        return final

    def save_best(self, step_dir: str, score: float, step: int) -> str:
        """Copy a step checkpoint's weights to `best/` (atomically; rank 0 copies)."""
        best = os.path.join(self.root, "best")
        if self.rank == 0:
            tmp = os.path.join(self.root, ".tmp-best")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(os.path.join(step_dir, "model"), os.path.join(tmp, "model"))
            with open(os.path.join(step_dir, "meta.json")) as f:
                meta = json.load(f)
            _write_json(os.path.join(tmp, "meta.json"), {**meta, "score": score, "step": step})
            old = os.path.join(self.root, ".tmp-best-old")
            if os.path.exists(best):
                os.replace(best, old)
            os.replace(tmp, best)
            shutil.rmtree(old, ignore_errors=True)
        barrier()
        return best

    def update_trainer_state(self, path: str, **fields: Any) -> None:
        """Replace fields of a checkpoint's trainer.pt atomically (rank 0 writes)."""
        if self.rank == 0:
            target = os.path.join(path, "trainer.pt")
            state = torch.load(target, weights_only=False)
            state.update(fields)
            torch.save(state, target + ".tmp")
            os.replace(target + ".tmp", target)
        barrier()

    def _prune(self) -> None:
        for _, path in self.complete()[:-self.keep_last]:
            shutil.rmtree(path, ignore_errors=True)

    # -- loading ----------------------------------------------------------------------
    def load(self, path: str, model: nn.Module, inner: nn.Module, optimizer: Any) -> dict[str, Any]:
        """Restore weights, optimizer and this rank's RNG; returns trainer + loader state."""
        _check_complete(path)
        model_sd, optim_sd = _state_dicts(model, inner, optimizer)
        try:
            single = not dist.is_initialized()
            with _quiet_single_process():
                dcp.load(model_sd, checkpoint_id=os.path.join(path, "model"), no_dist=single)
                dcp.load(optim_sd, checkpoint_id=os.path.join(path, "optim"), no_dist=single)
        except (Exception, CheckpointException) as exc:
            raise LavisIbError(f"checkpoint '{path}' does not match the model's trainable "
                               f"parameters: {_dcp_reason(exc)}") from None
        result = set_state_dict(model, optimizer, model_state_dict=model_sd,
                                optim_state_dict=optim_sd,
                                options=StateDictOptions(ignore_frozen_params=True, strict=False))
        report_load(path, inner, result.missing_keys, result.unexpected_keys)
        trainer = torch.load(os.path.join(path, "trainer.pt"), weights_only=False)
        rank_file = os.path.join(path, f"rank_{self.rank}.pt")
        if trainer.get("world_size") != self.world_size or not os.path.exists(rank_file):
            logger.warning("checkpoint %s was written by %s processes, this run has %s: RNG "
                           "states are not restored, the data order continues from rank 0's "
                           "state", path, trainer.get("world_size"), self.world_size)
            rank_file = os.path.join(path, "rank_0.pt")
            per_rank = torch.load(rank_file, weights_only=False)
        else:
            per_rank = torch.load(rank_file, weights_only=False)
            set_rng_state(per_rank["rng"])
        return {"trainer": trainer, "loader": per_rank["loader"]}


def list_checkpoints(root: str) -> list[tuple[int, str]]:
    """(step, path) of the complete step checkpoints under `root`, oldest first."""
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        match = _STEP_DIR.match(name)
        path = os.path.join(root, name)
        if match and os.path.isfile(os.path.join(path, "meta.json")):
            found.append((int(match.group(1)), path))
    return sorted(found)


def _check_complete(path: str) -> None:
    if not os.path.isfile(os.path.join(path, "meta.json")):
        raise ConfigError(f"'{path}' is not a complete lavis_ib checkpoint (no meta.json); "
                          f"give a checkpoints/step_* or checkpoints/best folder.")


def resolve_checkpoint(path: str) -> str:
    """A checkpoint folder from a checkpoint path or a run folder (its latest checkpoint)."""
    if os.path.isfile(os.path.join(path, "meta.json")):
        return path
    for root in (os.path.join(path, "checkpoints"), path):
        found = list_checkpoints(root)
        if found:
            return found[-1][1]
    raise ConfigError(f"no complete checkpoint under '{path}'; give a run folder or a "
                      f"checkpoints/step_* folder.")


def report_load(path: str, model: nn.Module, missing: list[str], unexpected: list[str]) -> None:
    """Raise for unexpected keys or missing trainable ones; log what came from where."""
    frozen = frozen_names(model)
    buffers = {n for n, _ in model.named_buffers()}
    bad_missing = [k for k in missing if k not in frozen and k not in buffers]
    if unexpected or bad_missing:
        raise LavisIbError(f"checkpoint '{path}' does not fit the model: missing trainable "
                           f"{sorted(bad_missing)[:8]}, unexpected {sorted(unexpected)[:8]}.")
    if get_rank() == 0:
        logger.info("loaded %s: %d trainable tensors restored; %d frozen tensors kept from "
                    "the model's initialisation", path, len(trainable_names(model)), len(frozen))


def load_trainable_weights(model: nn.Module, path: str) -> str:
    """Load a checkpoint's trainable weights into an unwrapped model in one process (no
    process group needed), e.g. for evaluation or export. Returns the checkpoint folder."""
    path = resolve_checkpoint(path)
    state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    try:
        with _quiet_single_process():
            dcp.load(state, checkpoint_id=os.path.join(path, "model"), no_dist=True)
    except (Exception, CheckpointException) as exc:
        raise LavisIbError(f"checkpoint '{path}' does not match the model: "
                           f"{_dcp_reason(exc)}") from None
    result = model.load_state_dict(state, strict=False)
    report_load(path, model, result.missing_keys, result.unexpected_keys)
    return path

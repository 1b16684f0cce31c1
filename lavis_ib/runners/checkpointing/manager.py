"""Training checkpoints: trainable weights, optimizer, scheduler, data-mixer state, RNG and
step, written atomically with torch.distributed.checkpoint (DCP).

A killed run resumes exactly where it stopped, a checkpoint loads under any strategy (DCP
reshards), and a half-written or damaged one is never loaded (see `CheckpointManager`)."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import warnings
from typing import Any, Iterator

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import FileSystemWriter
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_state_dict,
                                                     set_state_dict)

from lavis_ib.common.dist_utils import all_gather_objects, barrier, get_rank
from lavis_ib.common.durable_files import fsync_path, write_json_atomic
from lavis_ib.common.errors import LavisIbError
from lavis_ib.runners.checkpointing.files import (META, _STEP_DIR, check_verified,  # noqa: F401
                                                  list_checkpoints, manifest, newest_verified,
                                                  resolve_checkpoint, verify)
from lavis_ib.runners.checkpointing.faults import disk_full_writer, maybe_fault
from lavis_ib.runners.checkpointing.finite import check_finite, weights_problem
from lavis_ib.runners.checkpointing.rng import rng_state, set_rng_state  # noqa: F401 (re-exported)
from lavis_ib.runners.checkpointing.safe_load import (check_no_extra_weights, dcp_load, load_pt,
                                        raise_unsafe)

logger = logging.getLogger(__name__)


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


def _copy_reason(exc: OSError) -> str:
    """One line of a failed copy: copytree's `shutil.Error` carries a list of
    (source, destination, why) failures; the first one's reason stands for them."""
    failures = exc.args[0] if isinstance(exc, shutil.Error) and exc.args else None
    if isinstance(failures, list) and failures and isinstance(failures[0], tuple):
        return f"OSError: {failures[0][-1]}"
    return _dcp_reason(exc)


class CheckpointWriteError(LavisIbError):
    """A checkpoint could not be written (e.g. a full disk); earlier ones are intact."""


class CheckpointManager:
    """Saves and restores training state under `<output_dir>/checkpoints`.

    Layout (docs/checkpoints.md):

        step_00003000/        one complete checkpoint (only complete ones carry this name)
            model/            DCP: trainable parameters only (no frozen ViT/LLM weights)
            optim/            DCP: AdamW state, keyed by parameter name
            rank_<r>.pt       that rank's RNG states and data-loader state (tensors only)
            trainer.json      step, scheduler, grad scaler, world size
            meta.json         written last: step, world size, the run settings a resume must
                              keep, every other file with size and sha256; later updated
                              atomically with "validated" and "best"
        best/                 model/ + meta.json of the best validation score
        .tmp-*                an interrupted write; ignored, removed by the next save

    A checkpoint is written into a `.tmp-*` folder, every file and the folder are fsynced,
    and the folder is renamed when complete, so a process killed mid-write leaves the
    previous checkpoint usable; `verify` checks the listed sizes and checksums before any
    load. Reading never executes pickled code (`safe_load`). A failed write (a full disk)
    removes its `.tmp-*` folder and raises one `CheckpointWriteError` line. DCP writes each
    rank's shards, so the same code serves `none`, `ddp` and `fsdp`, and a checkpoint loads
    under any of them (DCP reshards). Loading is non-strict only for frozen parameters,
    with a report.

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
        """The newest step checkpoint that verifies; damaged newer ones are logged."""
        return newest_verified(self.root)

    # -- saving -----------------------------------------------------------------------
    def save(self, step: int, model: nn.Module, inner: nn.Module, optimizer: Any,
             trainer_state: dict[str, Any], loader_state: Any, meta: dict[str, Any]) -> str:
        """Write the checkpoint of `step` atomically; returns its path (every rank calls).

        Raises:
            CheckpointWriteError: on every rank when any rank's write failed; the partial
                folder is removed and the earlier checkpoints are untouched.
        """
        final = os.path.join(self.root, f"step_{step:08d}")
        tmp = os.path.join(self.root, f".tmp-step_{step:08d}")
        if self.rank == 0:
            os.makedirs(self.root, exist_ok=True)
            for name in os.listdir(self.root):  # leftovers of an interrupted write
                if name.startswith(".tmp-"):
                    shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)
            os.makedirs(tmp)
        barrier()
        error = None
        try:
            self._write_shards(tmp, step, model, inner, optimizer, loader_state)
        except (Exception, CheckpointException) as exc:  # a full disk, a failed rank
            error = _dcp_reason(exc)
        errors = [e for e in all_gather_objects(error) if e]
        if errors:
            self._abandon(tmp, step, errors[0])
        if self.rank == 0:
            try:
                write_json_atomic(os.path.join(tmp, "trainer.json"),
                                  {**trainer_state, "world_size": self.world_size})
                files = manifest(tmp)
                write_json_atomic(os.path.join(tmp, META), {
                    **meta, "step": step, "world_size": self.world_size, "complete": True,
                    "files": files})
            except OSError as exc:  # a disk that filled up after the shards
                error = _dcp_reason(exc)
        # the other ranks wait here for rank 0's verdict on the rest of the write
        errors = [e for e in all_gather_objects(error) if e]
        if errors:
            self._abandon(tmp, step, errors[0])
        if self.rank == 0:
            self._install(tmp, final)
            self._prune(keep=final)
        barrier()
        return final

    def _write_shards(self, tmp: str, step: int, model: nn.Module, inner: nn.Module,
                      optimizer: Any, loader_state: Any) -> None:
        model_sd, optim_sd = _state_dicts(model, inner, optimizer)
        single = not dist.is_initialized()
        with _quiet_single_process():
            dcp.save(model_sd, storage_writer=disk_full_writer(os.path.join(tmp, "model"), step),
                     no_dist=single)
            maybe_fault("LAVIS_IB_FAULT_IN_CHECKPOINT", step)
            dcp.save(optim_sd, storage_writer=FileSystemWriter(os.path.join(tmp, "optim")),
                     no_dist=single)
        torch.save({"rng": rng_state(), "loader": loader_state},
                   os.path.join(tmp, f"rank_{self.rank}.pt"))

    def _abandon(self, tmp: str, step: int | str, reason: str) -> None:
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        barrier()
        latest = self.latest()
        what = f"the step-{step} checkpoint" if isinstance(step, int) else step
        raise CheckpointWriteError(
            f"could not write {what} in {self.root} ({reason}); the partial "
            f"folder was removed and the earlier checkpoints are intact (newest: "
            f"{latest or 'none'}). Free space there, then continue with run.resume=auto.")

    def _install(self, tmp: str, final: str) -> None:
        """Rename `tmp` to `final`; an existing `final` is set aside first and removed
        only after the new one is in place (a kill never loses both)."""
        old = os.path.join(self.root, ".tmp-replaced-" + os.path.basename(final))
        if os.path.exists(final):
            os.replace(final, old)
        os.replace(tmp, final)
        fsync_path(self.root)
        shutil.rmtree(old, ignore_errors=True)

    def save_best(self, step_dir: str, score: float, step: int) -> str:
        """Copy a step checkpoint's weights to `best/` (atomically; rank 0 copies)."""
        best = os.path.join(self.root, "best")
        tmp = os.path.join(self.root, ".tmp-best")
        error = None
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                shutil.copytree(os.path.join(step_dir, "model"), os.path.join(tmp, "model"))
                with open(os.path.join(step_dir, META)) as f:
                    meta = json.load(f)
                meta.update(score=score, step=step, files=manifest(tmp))
                write_json_atomic(os.path.join(tmp, META), meta)
            except OSError as exc:  # shutil.Error (copytree's list of failures) included
                error = _copy_reason(exc)
        errors = [e for e in all_gather_objects(error) if e]
        if errors:
            self._abandon(tmp, f"the best checkpoint (step {step}, {best})", errors[0])
        if self.rank == 0:
            old = os.path.join(self.root, ".tmp-best-old")
            if os.path.exists(best):
                os.replace(best, old)
            os.replace(tmp, best)
            fsync_path(self.root)
            shutil.rmtree(old, ignore_errors=True)
        barrier()
        return best

    def update_meta(self, path: str, **fields: Any) -> None:
        """Set fields of a checkpoint's meta.json atomically (rank 0 writes); meta.json
        is outside its own manifest, so the checkpoint stays verified."""
        error = None
        if self.rank == 0:
            target = os.path.join(path, META)
            with open(target) as f:
                meta = json.load(f)
            try:
                write_json_atomic(target, {**meta, **fields})
            except OSError as exc:
                error = _dcp_reason(exc)
                for name in os.listdir(path):   # write_atomic's temporary file
                    if name.startswith(f"{META}.tmp-"):
                        os.remove(os.path.join(path, name))
        errors = [e for e in all_gather_objects(error) if e]
        if errors:
            raise CheckpointWriteError(
                f"could not update {os.path.join(path, META)} ({errors[0]}); the checkpoint "
                f"is intact without the new fields {sorted(fields)}. Free space there, then "
                f"continue with run.resume=auto.")

    def _prune(self, keep: str) -> None:
        """Delete the oldest step checkpoints beyond `keep_last`, never `keep` (the one
        just written) nor any newer than it."""
        kept_step = int(_STEP_DIR.match(os.path.basename(keep)).group(1))
        older = [p for s, p in self.complete() if s < kept_step]
        for path in older[:max(len(older) - (self.keep_last - 1), 0)]:
            shutil.rmtree(path, ignore_errors=True)

    # -- loading ----------------------------------------------------------------------
    def load(self, path: str, model: nn.Module, inner: nn.Module, optimizer: Any,
             verified: bool = False) -> dict[str, Any]:
        """Restore weights, optimizer and this rank's RNG; returns trainer + loader state
        (the trainer state carries meta.json's fields under "meta"). `verified`: the
        caller has checked the files (rank 0 did, for every rank)."""
        if verified:
            with open(os.path.join(path, META)) as f:
                meta = json.load(f)
        else:
            meta = check_verified(path)
        model_sd, optim_sd = _state_dicts(model, inner, optimizer)
        single = not dist.is_initialized()
        check_no_extra_weights(path, set(model_sd))
        try:
            dcp_load(model_sd, os.path.join(path, "model"), single)
            dcp_load(optim_sd, os.path.join(path, "optim"), single)
        except (Exception, CheckpointException) as exc:
            raise_unsafe(exc)
            raise LavisIbError(f"checkpoint '{path}' does not match the model's trainable "
                               f"parameters: {_dcp_reason(exc)}") from None
        check_finite(model_sd, path)   # before anything is set: the model stays as built
        check_finite(optim_sd.get("state", {}), path, "optimizer")
        result = set_state_dict(model, optimizer, model_state_dict=model_sd,
                                optim_state_dict=optim_sd,
                                options=StateDictOptions(ignore_frozen_params=True, strict=False))
        report_load(path, inner, result.missing_keys, result.unexpected_keys)
        with open(os.path.join(path, "trainer.json")) as f:
            trainer = {**json.load(f), "meta": meta}
        for key in ("best", "validated"):
            if key in meta:
                trainer[key] = meta[key]
        rank_file = os.path.join(path, f"rank_{self.rank}.pt")
        if trainer.get("world_size") != self.world_size or not os.path.exists(rank_file):
            logger.warning("checkpoint %s was written by %s processes, this run has %s: RNG "
                           "states are not restored, the data order continues from rank 0's "
                           "state", path, trainer.get("world_size"), self.world_size)
            per_rank = load_pt(os.path.join(path, "rank_0.pt"))
        else:
            per_rank = load_pt(rank_file)
            set_rng_state(per_rank["rng"])
        return {"trainer": trainer, "loader": per_rank["loader"]}


_check_complete = check_verified  # the former name, quoted by docs/checkpoints.md's tests


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
    check_verified(path)
    state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    check_no_extra_weights(path, set(state))
    try:
        dcp_load(state, os.path.join(path, "model"), single=True)
    except (Exception, CheckpointException) as exc:
        raise_unsafe(exc)
        raise LavisIbError(f"checkpoint '{path}' does not match the model: "
                           f"{_dcp_reason(exc)}") from None
    check_finite(state, path)   # before loading: the model keeps its weights
    result = model.load_state_dict(state, strict=False)
    report_load(path, model, result.missing_keys, result.unexpected_keys)
    return path


def best_or_newest(path: str) -> str:
    """The checkpoint a run folder is evaluated or exported with: `best/` when its files
    verify and its weights are finite, else (with a warning naming why) the newest step
    checkpoint that verifies; a checkpoint folder is itself (its problems are refused
    when it is loaded)."""
    best = os.path.join(path, "checkpoints", "best")
    if os.path.isfile(os.path.join(path, META)) or not os.path.isfile(os.path.join(best, META)):
        return resolve_checkpoint(path)
    reason = verify(best) or weights_problem(best)
    if reason is None:
        return best
    fallback = resolve_checkpoint(path)
    logger.warning("not using %s (%s); using the newest checkpoint that verifies instead: %s",
                   best, reason, fallback)
    return fallback

"""The run folder: one training run per output folder, and what a resume must keep.

The lock, the claim, the resume choice and the config-change check have one home, so the
runner (`RunFolder`) and the pre-flight (`folder_problems`, before any model is built) make
the same refusals."""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import time
from typing import Any, Callable, Mapping, Sequence

from lavis_ib.common.durable_files import write_json_atomic
from lavis_ib.common.errors import ConfigError, LavisIbError
from lavis_ib.runners.batching import derive_batching
from lavis_ib.runners.checkpointing.files import (check_verified, newest_verified,
                                                  resolve_checkpoint)

logger = logging.getLogger(__name__)
LOCK_NAME = ".lavis_ib.lock"


def rank0_decides(rank: int, action: Callable[[], Any]) -> Any:
    """Run `action` on rank 0 and return its value on every rank; a `LavisIbError`
    there is raised on every rank."""
    from lavis_ib.common.dist_utils import all_gather_objects

    outcome: tuple = (None, None)
    if rank == 0:
        try:
            outcome = (action(), None)
        except LavisIbError as exc:
            outcome = (None, (type(exc), str(exc)))
    value, error = all_gather_objects(outcome)[0]
    if error is not None:
        raise error[0](error[1])
    return value


# -- the lock ----------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class RunLock:
    """The exclusive lock of a run folder (rank 0 only).

    A lock file `<output_dir>/.lavis_ib.lock` (host, pid, start time) created with O_EXCL
    and held by rank 0 for the run's lifetime. A second run in the folder gets one line
    naming the holder; a lock left by a dead process on this host is taken over with a
    warning (a lock of another host is never guessed to be stale).
    """

    def __init__(self, output_dir: str) -> None:
        self.path = os.path.join(output_dir, LOCK_NAME)
        self.held = False
        self.record = {"host": socket.gethostname(), "pid": os.getpid(),
                       "start": datetime.datetime.now().isoformat(timespec="seconds")}

    def acquire(self) -> None:
        """Take the lock, or take over a stale one; else raise one ConfigError line."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.record, f)
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return
        raise ConfigError(f"could not take the lock {self.path}; try again.")

    def _holder(self) -> dict[str, Any]:
        try:
            with open(self.path) as f:
                holder = json.load(f)
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def holder_problem(self) -> str | None:
        """Why another run holds this lock (a live process here, or any of another
        host), or None: no lock, or a stale one that `acquire` takes over."""
        if not os.path.exists(self.path):
            return None
        holder = self._holder()
        host, pid = holder.get("host"), holder.get("pid")
        folder = os.path.dirname(self.path)
        if host == self.record["host"] and isinstance(pid, int) and _alive(pid):
            return (f"{folder} is in use by another run (pid {pid} on {host}, started "
                    f"{holder.get('start')}); wait for it to finish or set another "
                    f"run.output_dir.")
        if host not in (None, self.record["host"]):
            return (f"{folder} is in use by a run on host {host} (pid {pid}, started "
                    f"{holder.get('start')}); if that run is gone, delete {self.path}.")
        return None

    def _take_over_if_stale(self) -> None:
        problem = self.holder_problem()
        if problem:
            raise ConfigError(problem)
        holder = self._holder()
        logger.warning("taking over the stale lock %s (pid %s on %s is not running)",
                       self.path, holder.get("pid"), holder.get("host"))
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass

    def release(self) -> None:
        if not self.held:
            return
        try:
            with open(self.path) as f:
                still_ours = json.load(f).get("pid") == self.record["pid"]
            if still_ours:
                os.remove(self.path)
        except (OSError, ValueError):
            pass
        self.held = False


# -- claiming a folder for a new run -----------------------------------------------------
def _has_checkpoints(output_dir: str) -> bool:
    root = os.path.join(output_dir, "checkpoints")
    return os.path.isdir(root) and any(n.startswith("step_") or n == "best"
                                       for n in os.listdir(root))


def _occupied(output_dir: str) -> str:
    return (f"{output_dir} holds another run's checkpoints; set run.resume=auto to "
            f"continue it, run.overwrite=true to move it aside, or another run.output_dir.")


def claim_output_dir(output_dir: str, overwrite: bool) -> str | None:
    """Make `output_dir` this new run's own (rank 0, lock held); returns the folder the
    old contents were moved to, if any.

    A run that does not resume refuses a folder holding another run's checkpoints, unless
    `overwrite` (`run.overwrite: true`), which moves the old contents aside to
    `<dir>.old-<timestamp>/` so two runs' files never mix.

    Raises:
        ConfigError: the folder holds another run's checkpoints and `overwrite` is off.
    """
    others = [n for n in os.listdir(output_dir) if n != LOCK_NAME] \
        if os.path.isdir(output_dir) else []
    if not others:
        return None
    if not overwrite:
        if _has_checkpoints(output_dir):
            raise ConfigError(_occupied(output_dir))
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = f"{output_dir.rstrip(os.sep)}.old-{stamp}"
    n = 1
    while os.path.exists(aside):
        aside, n = f"{output_dir.rstrip(os.sep)}.old-{stamp}-{n}", n + 1
    os.makedirs(aside)
    for name in others:
        shutil.move(os.path.join(output_dir, name), os.path.join(aside, name))
    logger.warning("run.overwrite=true: moved the previous contents of %s to %s",
                   output_dir, aside)
    return aside


# -- resuming ----------------------------------------------------------------------------
def checkpoint_to_resume(run: Any, checksums: bool = True) -> str | None:
    """The checkpoint `run.resume` continues: auto, the newest one of the run folder that
    verifies (None: there is none); a path, that checkpoint (or a run folder's newest).
    `checksums=False` compares file sizes only (the pre-flight's look).

    Raises:
        LavisIbError: the path holds no checkpoint, or a damaged one.
    """
    if run.resume == "none":
        return None
    if run.resume == "auto":
        return newest_verified(os.path.join(run.output_dir, "checkpoints"), checksums)
    path = resolve_checkpoint(run.resume, checksums)
    check_verified(path, checksums)
    return path


# the LR schedule: a change re-plans the LR of every remaining step
SCHEDULE_KEYS = ("max_iters", "lr_sched", "warmup_steps", "warmup_lr", "min_lr",
                 "lr_decay_rate", "lr_decay_every")
STEP_SCHEDULE_KEYS = ("lr_decay_rate", "lr_decay_every")   # read by linear_warmup_step_lr only
STEP_SCHEDULE = "linear_warmup_step_lr"
# settings a resumed run must keep: (meta.json key, what the user changes)
# The settings a resume must keep, changed only with `run.allow_config_change: true`.
RESUME_KEYS = (("global_batch_size", "run.global_batch_size"), ("init_lr", "run.init_lr"),
               ("datasets", "the dataset list"), *((k, f"run.{k}") for k in SCHEDULE_KEYS))


def resume_settings(run: Any, global_batch_size: int | None,
                    datasets: Sequence[str] | None) -> dict[str, Any]:
    """The settings a resume must keep, as each checkpoint's meta.json records them
    (`global_batch_size` or `datasets` None: not known, left out of the comparison)."""
    out: dict[str, Any] = {"init_lr": float(run.init_lr)}
    if global_batch_size is not None:
        out["global_batch_size"] = global_batch_size
    if datasets is not None:
        out["datasets"] = sorted(datasets)
    out.update(max_iters=int(run.max_iters), lr_sched=str(run.lr_sched),
               warmup_steps=int(run.warmup_steps), warmup_lr=float(run.warmup_lr),
               min_lr=float(run.min_lr), lr_decay_rate=float(run.lr_decay_rate),
               lr_decay_every=int(run.lr_decay_every))
    return out


def config_changes(saved: Mapping[str, Any], now: Mapping[str, Any]
                   ) -> list[tuple[str, str, Any, Any]]:
    """(key, label, saved value, value now) of each resume setting that differs (keys
    a checkpoint of an older lavis_ib did not record are not compared; the step
    schedule's decay settings only where that schedule is used)."""
    step_schedule = STEP_SCHEDULE in (saved.get("lr_sched"), now.get("lr_sched"))
    return [(key, label, saved[key], now[key]) for key, label in RESUME_KEYS
            if key in saved and key in now and saved[key] != now[key]
            and (step_schedule or key not in STEP_SCHEDULE_KEYS)]


def changes_text(changes: Sequence[tuple[str, str, Any, Any]]) -> str:
    return ", ".join(f"{label} ({old} -> {new})" for _, label, old, new in changes)


def change_refusal(path: str, changes: Sequence[tuple[str, str, Any, Any]]) -> str:
    return (f"resuming {path} with a changed {changes_text(changes)}; restore the "
            f"checkpoint's values or set run.allow_config_change=true.")


def check_config_change(path: str, saved: Mapping[str, Any], now: Mapping[str, Any],
                        allowed: bool) -> list[str]:
    """The keys of the resume settings that changed (a warning names them), or one
    ConfigError naming each when not `allowed`."""
    changes = config_changes(saved, now)
    if changes and not allowed:
        raise ConfigError(change_refusal(path, changes))
    if changes:
        logger.warning("resuming %s with changed %s (run.allow_config_change=true)",
                       path, changes_text(changes))
    return [key for key, *_ in changes]


# -- the runner's handle -----------------------------------------------------------------
class RunFolder:
    """A training runner's output folder: locked and claimed (rank 0 decides for every
    rank), the checkpoint to resume chosen, its settings checked, and the run's
    config.yaml and run_info.json recorded.

    Rank 0 decides about the folder; `rank0_decides` hands its error to every rank so all
    of them stop with the same line instead of the others hanging in a collective.

    Args:
        run: the typed `run` config.
        rank: this process's rank.
    """

    def __init__(self, run: Any, rank: int) -> None:
        self.run, self.rank = run, rank
        self.path = run.output_dir
        self.lock = RunLock(self.path)

    def claim(self) -> None:
        """Lock the folder; a new run (resume: none) also makes it its own."""
        rank0_decides(self.rank, self._claim)

    def _claim(self) -> None:
        self.lock.acquire()
        if self.run.resume == "none":
            try:
                claim_output_dir(self.path, self.run.overwrite)
            except BaseException:
                self.lock.release()
                raise

    def release(self) -> None:
        self.lock.release()

    def checkpoint_to_resume(self) -> str | None:
        """The verified checkpoint to continue (rank 0 reads the checksums once for every
        rank), or None: a new run, or `auto` with no checkpoint yet (logged)."""
        path = rank0_decides(self.rank, lambda: checkpoint_to_resume(self.run))
        if path is None and self.run.resume == "auto":
            logger.info("run.resume=auto: no checkpoint in %s, starting at step 0", self.path)
        return path

    def check_resume(self, path: str, saved: Mapping[str, Any],
                     now: Mapping[str, Any]) -> list[str]:
        """The resume settings that changed (accepted with `run.allow_config_change`)."""
        return check_config_change(path, saved, now, self.run.allow_config_change)

    def record(self, cfg: Any, folder: str, keep: bool, world_size: int,
               batching: Mapping[str, int] | None = None) -> None:
        """config.yaml and run_info.json of `folder`, each written atomically; with `keep`
        (a resumed run) existing ones are kept: they record the run being continued."""
        import torch

        from lavis_ib import __version__

        if keep and os.path.exists(os.path.join(folder, "run_info.json")):
            return
        cfg.save(folder)
        versions = {"lavis_ib": __version__, "torch": torch.__version__,
                    "python": sys.version.split()[0], "world_size": world_size,
                    **(batching or {})}
        write_json_atomic(os.path.join(folder, "run_info.json"), versions)

    def evaluation_folder(self, name: str) -> str:
        """Where an evaluation writes: `run.output_dir` itself, or `<output_dir>/eval/<name>/`
        when that is a training run's folder (whose records it must not touch)."""
        if os.path.isdir(os.path.join(self.path, "checkpoints")):
            return os.path.join(self.path, "eval", name)
        return self.path


def evaluation_fingerprint(config: Any, checkpoint: str | None) -> str:
    """What an evaluation computes: the composed config and the checkpoint's meta."""
    from omegaconf import OmegaConf

    text = OmegaConf.to_yaml(config)
    if checkpoint:
        with open(os.path.join(checkpoint, "meta.json")) as f:
            text += checkpoint + f.read()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- the pre-flight's look ---------------------------------------------------------------
def trained_datasets(datasets: Mapping[str, Any], train_splits: Sequence[str]
                     ) -> list[str] | None:
    """The datasets a run trains on, from their `build_info.annotations` (those with a
    split in `train_splits`); None when a builder of its own layout hides its splits."""
    names = []
    for name, entry in datasets.items():
        annotations = (entry.get("build_info") or {}).get("annotations")
        if annotations is None:
            return None
        if any(split in annotations for split in train_splits):
            names.append(str(name))
    return names


def folder_problems(run: Any, datasets: Mapping[str, Any] | None,
                    world_size: int | None) -> list[str]:
    """What a training run would refuse about `run.output_dir`, found without building
    anything: another run's live lock, a new run into a folder holding checkpoints, a
    resume path with no (or a damaged) checkpoint, and changed resume settings. Checkpoint
    files are compared by size (no checksums: the runner verifies them before loading).

    Args:
        datasets: the composed `datasets` node (None: it did not compose; its list is
            then not compared).
        world_size: the processes the run will have (None: not known, e.g. `lavis-ib
            check` of a ddp project; a global batch derived from it is then not compared).
    """
    problem = RunLock(run.output_dir).holder_problem()
    if problem:   # another run writes there: nothing else about the folder is settled
        return [problem]
    if run.resume == "none":
        occupied = not run.overwrite and _has_checkpoints(run.output_dir)
        return [_occupied(run.output_dir)] if occupied else []
    try:
        path = checkpoint_to_resume(run, checksums=False)
        if path is None:
            return []
        saved = check_verified(path, checksums=False)
        known = world_size is not None or run.global_batch_size is not None
        global_bs = derive_batching(run, world_size or 1)[0] if known else None
    except LavisIbError as exc:
        return [str(exc)]
    names = trained_datasets(datasets, list(run.train_splits)) if datasets is not None else None
    changes = config_changes(saved, resume_settings(run, global_bs, names))
    return [change_refusal(path, changes)] if changes and not run.allow_config_change else []

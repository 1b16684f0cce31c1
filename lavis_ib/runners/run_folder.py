"""The run folder: one training run per output folder, and what a resume must keep.

The lock, the claim, the resume choice and the config-change check have one home, so the
runner (`RunFolder`) and the pre-flight (`folder_problems`, before any model is built) make
the same refusals."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from typing import Any, Callable, Mapping, Sequence

from lavis_ib.common.durable_files import write_json_atomic
from lavis_ib.common.errors import ConfigError, LavisIbError
from lavis_ib.common.output_lock import OutputLock
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
class RunLock(OutputLock):
    """The exclusive lock of a run folder (rank 0 only): `<output_dir>/.lavis_ib.lock`
    (host, pid, start time), held for the run's lifetime. A second run in the folder gets
    one line naming the holder; a lock left by a dead process on this host is taken over
    with a warning, atomically (`OutputLock`)."""

    def __init__(self, output_dir: str) -> None:
        super().__init__(os.path.join(output_dir, LOCK_NAME), subject=output_dir.rstrip(os.sep)
                         or output_dir, holder="run", elsewhere="set another run.output_dir")


# -- claiming a folder for a new run -----------------------------------------------------
# what a training or evaluation run writes at the top of its folder
RUN_RECORDS = ("log.jsonl", "config.yaml", "run_info.json", "checkpoints", "tb", "wandb",
               "eval")
RUN_ENTRIES = (*RUN_RECORDS, "report", LOCK_NAME)


def run_records(output_dir: str) -> list[str]:
    """The run records `output_dir` holds (its log, config, run info, events, checkpoints,
    evaluations): a run that neither resumes nor overwrites must not write among them."""
    if not os.path.isdir(output_dir):
        return []
    return [n for n in RUN_RECORDS if os.path.exists(os.path.join(output_dir, n))]


def _run_entry(name: str) -> bool:
    """A run's file, or the temporary file of one cut short (`<name>.tmp-<pid>`, a lock's
    `<lock>.new-...`)."""
    return name.split(".tmp-")[0] in RUN_ENTRIES or name.startswith(LOCK_NAME + ".new-")


def foreign_entries(output_dir: str) -> list[str]:
    """The entries of `output_dir` that no run writes (a run folder has none)."""
    if not os.path.isdir(output_dir):
        return []
    return sorted(n for n in os.listdir(output_dir) if not _run_entry(n))


def _has_checkpoints(output_dir: str) -> bool:
    root = os.path.join(output_dir, "checkpoints")
    return os.path.isdir(root) and any(n.startswith("step_") or n == "best"
                                       for n in os.listdir(root))


def _occupied(output_dir: str, records: Sequence[str]) -> str:
    what = ("checkpoints" if _has_checkpoints(output_dir)
            else f"files ({', '.join(records)})")
    return (f"{output_dir} holds another run's {what}; set run.resume=auto to continue it, "
            f"run.overwrite=true to move it aside, or another run.output_dir.")


def _not_a_run_folder(output_dir: str, foreign: Sequence[str]) -> str:
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    return (f"run.overwrite=true moves only a run folder aside, and {output_dir} also holds "
            f"{shown}, which no run writes; set another run.output_dir (or move those "
            f"yourself).")


def claim_problem(output_dir: str, overwrite: bool) -> str | None:
    """Why a new run (resume: none) may not take `output_dir`, or None."""
    if overwrite:
        foreign = foreign_entries(output_dir)
        return _not_a_run_folder(output_dir, foreign) if foreign else None
    records = run_records(output_dir)
    return _occupied(output_dir, records) if records else None


def claim_output_dir(output_dir: str, overwrite: bool) -> str | None:
    """Make `output_dir` this new run's own (rank 0, lock held); returns the folder the
    old contents were moved to, if any.

    A run that does not resume refuses a folder holding another run's records (log,
    config, run info, events, checkpoints), unless `overwrite` (`run.overwrite: true`),
    which moves the old run aside to `<dir>.old-<timestamp>/` so two runs' files never
    mix. `overwrite` refuses a folder holding anything a run does not write (it is not a
    run folder: its files are never moved).

    Raises:
        ConfigError: the folder holds another run's records and `overwrite` is off, or
            `overwrite` is on and the folder holds files of something else.
    """
    problem = claim_problem(output_dir, overwrite)
    if problem:
        raise ConfigError(problem)
    others = [n for n in os.listdir(output_dir) if n != LOCK_NAME] \
        if os.path.isdir(output_dir) else []
    if not overwrite or not others:
        return None
    base = os.path.abspath(output_dir).rstrip(os.sep)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = f"{base}.old-{stamp}"
    n = 1
    while os.path.exists(aside):
        aside, n = f"{base}.old-{stamp}-{n}", n + 1
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
# The settings a resume must keep, changed only with `run.allow_config_change: true`:
# (meta.json key, what the user changes)
RESUME_KEYS = (("global_batch_size", "run.global_batch_size"), ("init_lr", "run.init_lr"),
               ("datasets", "the dataset list"), ("sample_ratios", "sample_ratio"),
               *((k, f"run.{k}") for k in SCHEDULE_KEYS))


def resume_settings(run: Any, global_batch_size: int | None,
                    datasets: Sequence[str] | Mapping[str, float] | None) -> dict[str, Any]:
    """The settings a resume must keep, as each checkpoint's meta.json records them
    (`global_batch_size` or `datasets` None: not known, left out of the comparison).
    `datasets` given as {name: sample_ratio} also records the mixture's ratios."""
    out: dict[str, Any] = {"init_lr": float(run.init_lr)}
    if global_batch_size is not None:
        out["global_batch_size"] = global_batch_size
    if datasets is not None:
        out["datasets"] = sorted(datasets)
        if isinstance(datasets, Mapping):
            out["sample_ratios"] = {str(k): float(v) for k, v in sorted(datasets.items())}
    out.update(max_iters=int(run.max_iters), lr_sched=str(run.lr_sched),
               warmup_steps=int(run.warmup_steps), warmup_lr=float(run.warmup_lr),
               min_lr=float(run.min_lr), lr_decay_rate=float(run.lr_decay_rate),
               lr_decay_every=int(run.lr_decay_every))
    return out


def _proportions(ratios: Mapping[str, float]) -> dict[str, float]:
    total = sum(ratios.values())
    return {k: (v / total if total else v) for k, v in ratios.items()}


def _ratio_changes(saved: Mapping[str, Any], now: Mapping[str, Any]
                   ) -> list[tuple[str, str, Any, Any]]:
    """When the mixture moved, one change per dataset whose ratio changed (the mixer
    draws in proportion to the ratios, so scaling them all changes nothing); only the
    datasets trained then and now are compared (a changed list is a change of its own)."""
    common = sorted(set(saved) & set(now))
    then, later = (_proportions({k: float(r[k]) for k in common}) for r in (saved, now))
    if all(abs(then[k] - later[k]) <= 1e-9 * max(1.0, abs(then[k])) for k in common):
        return []
    return [("sample_ratios", f"datasets.{k}.sample_ratio", saved[k], now[k]) for k in common
            if float(saved[k]) != float(now[k])]


def config_changes(saved: Mapping[str, Any], now: Mapping[str, Any]
                   ) -> list[tuple[str, str, Any, Any]]:
    """(key, label, saved value, value now) of each resume setting that differs (keys
    a checkpoint of an older lavis_ib did not record are not compared; the step
    schedule's decay settings only where that schedule is used; the sample ratios one
    dataset at a time)."""
    step_schedule = STEP_SCHEDULE in (saved.get("lr_sched"), now.get("lr_sched"))
    changes = []
    for key, label in RESUME_KEYS:
        if key not in saved or key not in now or saved[key] == now[key]:
            continue
        if key == "sample_ratios":
            if isinstance(saved[key], Mapping) and isinstance(now[key], Mapping):
                changes += _ratio_changes(saved[key], now[key])
        elif step_schedule or key not in STEP_SCHEDULE_KEYS:
            changes.append((key, label, saved[key], now[key]))
    return changes


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
        when that is a training run's folder (`is_training_run`), whose records it must
        not touch; `name` must be a plain folder name.

        Raises:
            ConfigError: `name` is empty, `.`, `..` or holds a path separator.
        """
        check_evaluation_name(name)
        if is_training_run(self.path):
            return os.path.join(self.path, "eval", name)
        return self.path


def check_evaluation_name(name: str) -> None:
    """An evaluation's name becomes the folder `RUN/eval/<name>/`: a plain name, or one
    ConfigError line."""
    if name in ("", ".", "..") or any(c in name for c in ("/", "\\", "\0", os.sep)):
        raise ConfigError(f"evaluation name {name!r} must be a plain folder name (no '/', "
                          f"'\\', '.' or '..'): the results go to RUN/eval/<name>/; give e.g. "
                          f"--name heldout.")


def is_training_run(folder: str) -> bool:
    """Whether `folder` is a training run's: it holds a run lock, checkpoints, a training
    log, or a `run_info.json` recording a training batch (an evaluation's records none),
    so a run killed before its first checkpoint counts too."""
    if any(os.path.exists(os.path.join(folder, n))
           for n in (LOCK_NAME, "checkpoints", "log.jsonl")):
        return True
    try:
        with open(os.path.join(folder, "run_info.json"), encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and "global_batch_size" in info


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
                     ) -> dict[str, float] | list[str] | None:
    """The datasets a run trains on, from their `build_info.annotations` (those with a
    split in `train_splits`), as {name: sample_ratio} (a list of names when a ratio is
    not a number: the pre-flight names that problem); None when a builder of its own
    layout hides its splits."""
    ratios: dict[str, Any] = {}
    for name, entry in datasets.items():
        annotations = (entry.get("build_info") or {}).get("annotations")
        if annotations is None:
            return None
        if any(split in annotations for split in train_splits):
            ratios[str(name)] = entry.get("sample_ratio", 1.0)
    try:
        return {name: float(ratio) for name, ratio in ratios.items()}
    except (TypeError, ValueError):
        return list(ratios)


def folder_problems(run: Any, datasets: Mapping[str, Any] | None,
                    world_size: int | None) -> list[str]:
    """What a training run would refuse about `run.output_dir`, found without building
    anything: another run's live lock, a new run into a folder holding another run's
    records (or, with `run.overwrite`, files no run writes), a resume path with no (or a
    damaged) checkpoint, and changed resume settings (the mixture's ratios included). Checkpoint
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
        problem = claim_problem(run.output_dir, run.overwrite)
        return [problem] if problem else []
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

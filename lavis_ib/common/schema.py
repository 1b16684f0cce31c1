"""The typed `run:` schema: every key, its type, default and meaning, in one place, so a
wrong type, a misspelt key or a value out of range in a project's `run:` node fails as one
`ConfigError` line naming the key, before anything is built."""
from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lavis_ib.common.errors import ConfigError, did_you_mean

CHOICES = {
    "amp": ("bf16", "fp16", "none"),
    "distributed": ("none", "ddp", "fsdp"),
    "mix_unit": ("micro_batch", "sample", "step"),
    "packing": ("auto", "true", "false"),
}


def _list(*items: str) -> Any:
    return field(default_factory=lambda: list(items))


@dataclass
class RunConfig:
    """Settings of a run (`run:` in a project file), as an OmegaConf structured config:
    `validate_run` merges a project's mapping into it, so OmegaConf does the typing."""

    task: str = "instruction_tuning"            # registered training task
    runner: str = "runner_iter"                 # registered runner
    max_iters: int = 60000                      # optimizer steps
    val_every: int = 3000                       # validate (and checkpoint) every N steps; 0: never
    save_every: int = 0                         # extra checkpoints every N steps; 0: at validation only
    keep_last: int = 2                          # newest checkpoints kept (best kept apart)
    global_batch_size: Optional[int] = None     # samples per optimizer step over all ranks
    batch_size_train: int = 8                   # samples per device per forward
    batch_size_eval: int = 8                    # samples per device in evaluation
    accum_grad_iters: Optional[int] = None      # derived from the global batch when unset
    max_tokens_per_micro_batch: Optional[int] = None  # split each rank's share of a step into
                                                # micro-batches of at most this many LLM positions
                                                # (samples x longest); None: batch_size_train samples
    lr_sched: str = "linear_warmup_cosine_lr"   # registered LR scheduler
    init_lr: float = 1e-5                       # peak LR after warm-up
    min_lr: float = 0.0                         # LR at max_iters (cosine) / floor (step)
    warmup_lr: float = 1e-8                     # LR at step 0
    warmup_steps: int = 1000                    # linear warm-up steps
    lr_decay_rate: float = 0.9                  # linear_warmup_step_lr: factor per decay
    lr_decay_every: int = 1000                  # linear_warmup_step_lr: steps per decay
    weight_decay: float = 0.05                  # AdamW, on parameters with 2+ dimensions
    beta2: float = 0.999                        # AdamW beta2 (beta1 is 0.9)
    grad_clip: Optional[float] = None           # max gradient norm; None: no clipping
    amp: str = "bf16"                           # autocast dtype: bf16 | fp16 (with scaler) | none
    distributed: str = "none"                   # none | ddp | fsdp (under torchrun)
    activation_checkpointing: bool = False      # recompute LLM block activations
    packing: str = "auto"                       # decoder-only LLMs: training sequences end to end, no
                                                # padding; auto: where the family's self-check passes
                                                # | true (required) | false (padded) (docs/training.md)
    balanced_sampling: bool = True              # sqrt(size) x sample_ratio; False: size-proportional
    mix_unit: str = "micro_batch"               # one dataset draw per micro_batch (batch_size_train slots) | sample | step
    max_bad_sample_fraction: float = 0.01       # stop when more samples than this are unreadable: in
                                                # training over max(requested, bad_sample_grace), in an
                                                # evaluation over the split (docs/projects.md)
    bad_sample_grace: int = 1000                # the fraction is taken over at least this many samples
    num_workers: int = 2                        # data loader workers per rank
    per_sample_dropout: bool = True             # Q-Former dropout masks drawn per sample: the same step
                                                # for any split of the global batch (docs/determinism.md);
                                                # false: torch's per-process dropout (2-7% faster on CPU)
    seed: int = 42                              # base seed (rank added for dropout/augmentation)
    output_dir: str = "output/run"              # run folder: config, logs, checkpoints, predictions
    resume: str = "none"                        # auto | path to a checkpoint | none
    select_metric: List[str] = _list(           # mean of these "dataset.metric" picks best/
        "coco_caption.cider", "ok_vqa.acc", "aok_vqa.acc", "textcaps.cider")
    device: str = "auto"                        # auto (cuda when present) | cpu | cuda
    log_every: int = 10                         # steps between log lines
    loggers: List[str] = _list("tensorboard")   # besides log.jsonl: tensorboard | wandb
    evaluate_only: bool = False                 # skip training, evaluate the eval splits
    train_splits: List[str] = _list("train")    # a string is read as a one-item list
    valid_splits: List[str] = _list("val")
    test_splits: List[str] = _list("test")
    dist_timeout_s: int = 60                    # process-group timeout: a hang fails fast
    # -- runs and checkpoints (docs/reliability.md) --
    max_skipped_steps: int = 10                 # non-finite gradient steps skipped in a row before stopping
    overwrite: bool = False                     # a new run moves an used output_dir aside to <dir>.old-<time>
    allow_config_change: bool = False           # resume with a changed batch, LR, LR schedule or dataset list


# LAVIS name -> (our name, value converter)
ALIASES: dict[str, tuple[str, Any]] = {
    "iters_per_inner_epoch": ("val_every", None),
    "resume_ckpt_path": ("resume", lambda v: "none" if v in (None, "") else v),
    "evaluate": ("evaluate_only", None),
    "max_grad_norm": ("grad_clip", None),
    "lr_decay_steps": ("lr_decay_every", None),
}
# LAVIS keys that carry over with a converted value under the same name
_LAVIS_VALUES = {
    "amp": {True: "fp16", False: "none"},
    "distributed": {True: "ddp", False: "none"},
}
# LAVIS keys torchrun makes meaningless; accepted and dropped
IGNORED = {"world_size", "dist_url", "gpu", "rank"}
# LAVIS's epoch keys: refused, naming the keys to use instead
_UNSUPPORTED = {
    "max_epoch": "lavis_ib runs are iteration-based: set run.max_iters instead",
    "iters_per_epoch": "set run.max_iters and run.val_every instead",
}

FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
_HINTS = get_type_hints(RunConfig)


def _base_type(key: str) -> Any:
    """The field's type without Optional: int, float, bool, str or List[str]."""
    hint = _HINTS[key]
    if get_origin(hint) is Union:
        hint = next(a for a in get_args(hint) if a is not type(None))
    return hint


def _normalise(key: str, value: Any) -> Any:
    """LAVIS's habits OmegaConf would reject: `amp: true`, `train_splits: train`, an
    integer written as a float (`max_iters: 6.0e4`)."""
    if key in _LAVIS_VALUES and isinstance(value, bool):
        return _LAVIS_VALUES[key][value]
    if key == "packing" and isinstance(value, bool):
        return str(value).lower()
    hint = _base_type(key)
    if get_origin(hint) in (list, List) and isinstance(value, str):
        return [value]
    if hint is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _prepass(given: Mapping[str, Any]) -> dict[str, Any]:
    """Our key names and values from a `run:` mapping that may use LAVIS's."""
    out: dict[str, Any] = {}
    for key, value in given.items():
        key = str(key)
        if key in IGNORED:
            continue
        if key in _UNSUPPORTED:
            raise ConfigError(f"run.{key} is not supported: {_UNSUPPORTED[key]}.")
        if key in ALIASES:
            target, convert = ALIASES[key]
            if target in given:
                raise ConfigError(f"run.{key} and run.{target} both set; keep only run.{target}.")
            key, value = target, (convert(value) if convert else value)
        if key not in FIELDS:
            raise ConfigError(f"unknown key run.{key}.{did_you_mean(key, [*FIELDS, *ALIASES])} "
                              f"See docs/projects.md for every run key.")
        out[key] = _normalise(key, value)
    return out


def _type_name(hint: Any) -> str:
    return "list of str" if get_origin(hint) in (list, List) else getattr(hint, "__name__", str(hint))


def _raise_type_error(schema: DictConfig, given: Mapping[str, Any]) -> None:
    """The merge failed: find the key whose value does not fit and name it."""
    for key, value in given.items():
        try:
            OmegaConf.merge(schema, {key: value})
        except OmegaConfBaseException:
            raise ConfigError(f"run.{key}: expected {_type_name(_base_type(key))}, got "
                              f"{type(value).__name__} {value!r}") from None
    raise ConfigError(f"run: cannot apply {dict(given)}")  # unreachable: one key must fail


def validate_run(run: Mapping[str, Any] | None, collect: list[str] | None = None) -> DictConfig:
    """The complete, typed `run` config (a `RunConfig` DictConfig in struct mode).

    A pre-pass maps LAVIS's names and values onto ours (`ALIASES`, `_LAVIS_VALUES`), drops
    the keys torchrun makes meaningless (`IGNORED`) and refuses LAVIS's epoch keys
    (`_UNSUPPORTED`); OmegaConf then types the merge (an `int` key given "abc" fails), the
    keys with a fixed set of values are checked against `CHOICES` and the ranges by
    `run_problems`. Struct mode makes a misspelt key fail on read and on write, in the
    project file and in code alike (`run.max_iter` raises instead of returning None).

    Args:
        collect: when given, values out of range are appended to it (one line each)
            instead of raised, so the pre-flight check can go on with the typed config.

    Raises:
        ConfigError: an unknown key (with the closest match), a wrong type or an invalid
            choice, naming the key; values out of range (all of them, one per line).
    """
    if run is not None and not isinstance(run, Mapping):
        raise ConfigError(f"run must be a mapping of run settings (docs/projects.md lists them); "
                          f"got {type(run).__name__} {run!r:.80}.")
    given = _prepass(run or {})
    schema = OmegaConf.structured(RunConfig)
    try:
        schema = OmegaConf.merge(schema, given)
    except OmegaConfBaseException:
        _raise_type_error(schema, given)
    for key, choices in CHOICES.items():
        if schema[key] not in choices:
            raise ConfigError(f"run.{key}: '{schema[key]}' is not one of {', '.join(choices)}.")
    problems = run_problems(schema)
    if collect is not None:
        collect.extend(problems)
    elif problems:
        raise ConfigError("\n  ".join(problems))
    OmegaConf.set_struct(schema, True)
    return schema


# -- range checks (issue 12) ---------------------------------------------------------------
# Each typed run key's admissible values, checked after the merge: a value of the right
# type but outside its range (batch size 0, a negative LR, an empty output folder) would
# otherwise fail deep inside a run or, worse, run. One problem per key, each a line.
_AT_LEAST_1 = ("max_iters", "batch_size_train", "batch_size_eval", "keep_last", "lr_decay_every",
               "log_every", "dist_timeout_s")
_AT_LEAST_0 = ("val_every", "save_every", "warmup_steps", "num_workers", "seed", "bad_sample_grace",
               "max_skipped_steps", "min_lr", "warmup_lr", "weight_decay")
# LRs that must not exceed init_lr: the cosine's floor and the warm-up's start (a schedule that
# rises from its floor, or warms up downwards, is a typo)
_AT_MOST_INIT_LR = ("min_lr", "warmup_lr")
_OPTIONAL_AT_LEAST_1 = ("global_batch_size", "accum_grad_iters", "max_tokens_per_micro_batch")
_UNIT_INTERVAL = {"max_bad_sample_fraction": "[0, 1]", "beta2": "[0, 1)", "lr_decay_rate": "(0, 1]"}
_PATH_KEYS = ("output_dir", "resume")
_SPLIT_KEYS = ("train_splits", "valid_splits", "test_splits")
DEVICES = ("auto", "cpu", "cuda")


def expand_path(value: str) -> str:
    """`~` and `$VAR` / `${VAR}` expanded (an unset variable stays, and is reported)."""
    return os.path.expandvars(os.path.expanduser(str(value)))


def unset_variable(path: str) -> str | None:
    """The first `$VAR` left in an expanded path (an unset environment variable), or None."""
    match = re.search(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", path)
    return match.group(1) if match else None


def _in_unit_interval(key: str, value: float) -> bool:
    bounds = _UNIT_INTERVAL[key]
    low_ok = value > 0 if bounds[0] == "(" else value >= 0
    high_ok = value < 1 if bounds[-1] == ")" else value <= 1
    return low_ok and high_ok


def run_problems(run: Any) -> list[str]:
    """Every run value outside its range, one line per key naming it; expands `~` and
    environment variables in `output_dir` and `resume` in place. Every float range is
    finite (`inf` and `nan` are refused wherever a number is read)."""
    out = [f"run.{k} must be an integer >= 1; got {run[k]}." for k in _AT_LEAST_1 if run[k] < 1]
    out += [f"run.{k} must be {'a finite number' if _base_type(k) is float else 'an integer'} "
            f">= 0; got {run[k]}." for k in _AT_LEAST_0 if not (math.isfinite(run[k]) and run[k] >= 0)]
    out += [f"run.{k} must be null or an integer >= 1; got {run[k]}."
            for k in _OPTIONAL_AT_LEAST_1 if run[k] is not None and run[k] < 1]
    out += [f"run.{k} must be in {b}; got {run[k]}." for k, b in _UNIT_INTERVAL.items()
            if not _in_unit_interval(k, float(run[k]))]
    init_ok = math.isfinite(run.init_lr) and run.init_lr > 0
    if not init_ok:
        out.append(f"run.init_lr must be a finite number > 0; got {run.init_lr}.")
    out += [f"run.{k} ({run[k]}) must not exceed run.init_lr ({run.init_lr}): the schedule "
            f"goes from warmup_lr up to init_lr, then down to min_lr." for k in _AT_MOST_INIT_LR
            if init_ok and math.isfinite(run[k]) and run[k] > run.init_lr]
    if run.grad_clip is not None and not (math.isfinite(run.grad_clip) and run.grad_clip > 0):
        out.append(f"run.grad_clip must be null (no clipping) or a finite number > 0; "
                   f"got {run.grad_clip}.")
    if run.device not in DEVICES and not str(run.device).startswith("cuda:"):
        out.append(f"run.device: '{run.device}' is not one of {', '.join(DEVICES)} (or cuda:N).")
    for key in _PATH_KEYS:
        if not str(run[key]).strip():
            out.append(f"run.{key} is empty; give a folder path"
                       + (" (or 'none')." if key == "resume" else "."))
            continue
        run[key] = expand_path(run[key])
        if unset_variable(run[key]):
            out.append(f"run.{key}: environment variable ${unset_variable(run[key])} is not set "
                       f"('{run[key]}').")
    for key in _SPLIT_KEYS:
        if any(not str(s).strip() for s in run[key]):
            out.append(f"run.{key} holds an empty split name; got {list(run[key])}.")
    out += logger_problems(run.loggers)
    bad = [str(m) for m in run.select_metric if not re.fullmatch(r"[^.\s]+\.[^.\s]+", str(m))]
    if bad:
        out.append(f"run.select_metric: write each item as 'dataset.metric' (e.g. coco_caption.cider); "
                   f"got {bad}.")
    return out


LOGGERS = ("tensorboard", "wandb")


def logger_problems(loggers: Any) -> list[str]:
    """Unknown names in `run.loggers`, and `wandb` asked for without wandb installed (found
    without importing it: its import takes seconds)."""
    import importlib.util

    out = [f"run.loggers: unknown logger '{name}'.{did_you_mean(str(name), LOGGERS)} "
           f"Choose from {', '.join(LOGGERS)} (log.jsonl is always written)."
           for name in loggers if name not in LOGGERS]
    if "wandb" in loggers and importlib.util.find_spec("wandb") is None:
        out.append("run.loggers has 'wandb' but wandb is not installed: "
                   "pip install 'lavis_ib[wandb]' (or remove wandb from run.loggers).")
    return out

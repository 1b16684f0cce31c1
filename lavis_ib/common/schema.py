"""The typed `run:` schema: every key, its type, default and meaning, in one place.

`validate_run` fills defaults, maps LAVIS's names onto ours, and rejects unknown keys
(with the closest match) and values of the wrong type (naming the key).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union, get_args, get_origin, get_type_hints

from lavis_ib.common.errors import ConfigError, did_you_mean

CHOICES = {
    "amp": ("bf16", "fp16", "none"),
    "distributed": ("none", "ddp", "fsdp"),
}


@dataclass
class RunConfig:
    """Settings of a run (`run:` in a project file)."""

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
    balanced_sampling: bool = True              # sqrt(size) x sample_ratio; False: size-proportional
    max_bad_sample_fraction: float = 0.01       # stop when more samples than this are unreadable
    num_workers: int = 2                        # data loader workers per rank
    seed: int = 42                              # base seed (rank added for dropout/augmentation)
    output_dir: str = "output/run"              # run folder: config, logs, checkpoints, predictions
    resume: str = "none"                        # auto | path to a checkpoint | none
    select_metric: list = field(default_factory=lambda: [
        "coco_caption.cider", "ok_vqa.acc", "aok_vqa.acc", "textcaps.cider"])
    device: str = "auto"                        # auto (cuda when present) | cpu | cuda
    log_every: int = 10                         # steps between log lines
    evaluate_only: bool = False                 # skip training, evaluate the eval splits
    train_splits: list = field(default_factory=lambda: ["train"])
    valid_splits: list = field(default_factory=lambda: ["val"])
    test_splits: list = field(default_factory=lambda: ["test"])
    dist_timeout_s: int = 60                    # process-group timeout: a hang fails fast


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
_UNSUPPORTED = {
    "max_epoch": "lavis_ib runs are iteration-based: set run.max_iters instead",
    "iters_per_epoch": "set run.max_iters and run.val_every instead",
}

FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}


def _coerce(key: str, value: Any, hint: Any) -> Any:
    origin = get_origin(hint)
    if origin is Union:  # Optional[X]
        if value is None:
            return None
        hint = next(a for a in get_args(hint) if a is not type(None))
    if hint is list or origin is list:
        if isinstance(value, str):
            return [value]
        if isinstance(value, (list, tuple)):
            return list(value)
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"run.{key}: expected {getattr(hint, '__name__', hint)}, "
                      f"got {type(value).__name__} {value!r}")


def validate_run(run: Mapping[str, Any] | None) -> dict[str, Any]:
    """A complete, typed `run` dict from a project's `run:` mapping.

    Raises:
        ConfigError: an unknown key (with the closest match), a wrong type or an invalid
            choice, naming the key.
    """
    given = dict(run or {})
    hints = get_type_hints(RunConfig)
    out: dict[str, Any] = {}
    for key, value in given.items():
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
        if key in _LAVIS_VALUES and isinstance(value, bool):
            value = _LAVIS_VALUES[key][value]
        out[key] = _coerce(key, value, hints[key])
    for key, choices in CHOICES.items():
        if key in out and out[key] not in choices:
            raise ConfigError(f"run.{key}: '{out[key]}' is not one of {', '.join(choices)}.")
    defaults = dataclasses.asdict(RunConfig())
    return {**defaults, **out}

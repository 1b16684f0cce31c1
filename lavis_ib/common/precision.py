"""Precision names used in configs (`fp32`, `bf16`, `fp16`, `none`) and their torch dtypes.

`model.vit_precision` / `model.llm_precision` name the storage dtype of frozen parts;
`run.amp` names the autocast dtype (`none`: no autocast).
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Optional

import torch

from lavis_ib.common.errors import ConfigError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: the device types a per-device precision names (`{cuda: fp16, cpu: fp32}`); a device type
#: the mapping leaves out gets fp32
DEVICE_TYPES = ("cuda", "cpu")
#: the model keys that name a frozen part's storage precision
PRECISION_KEYS = ("vit_precision", "llm_precision")


def storage_dtype(name: str, key: str = "precision") -> torch.dtype:
    """The dtype of a precision name; `key` names the setting in the error."""
    if not isinstance(name, str) or name not in DTYPES:
        raise ConfigError(f"{key} must be one of {', '.join(DTYPES)}; got '{name}'.")
    return DTYPES[name]


def autocast_dtype(amp: str) -> Optional[torch.dtype]:
    """The autocast dtype of `run.amp` (None for `none`/`fp32`: no autocast)."""
    return None if amp in ("none", "fp32") else storage_dtype(amp, "run.amp")


def device_type(device: Any = None) -> str:
    """`cuda` or `cpu` for a device (a name, `torch.device`, or None / `auto`: CUDA when one
    is visible). Needs no CUDA for a named CUDA device: a precision is only looked up."""
    if device is None or str(device) == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        kind = str(device)
    if kind not in DEVICE_TYPES:
        raise ConfigError(f"no precision is defined for device '{device}'; use one of "
                          f"{', '.join(DEVICE_TYPES)}.")
    return kind


def resolve_precision(value: Any, device: Any = None, key: str = "precision") -> str:
    """The precision name that `value` gives on `device` (see `device_type`).

    `value` is a name (`fp32`, `bf16`, `fp16`: every device) or a mapping of device types to
    names (`{cuda: fp16, cpu: fp32}`: the shipped model types' defaults, the authors' dtype
    on CUDA and fp32 on CPU); a device type the mapping leaves out gets fp32.

    Raises:
        ConfigError: an unknown name or device type, naming `key`.
    """
    if isinstance(value, Mapping):
        unknown = sorted(str(k) for k in value if k not in DEVICE_TYPES)
        if unknown:
            raise ConfigError(f"{key}: device types {unknown} are not known; a per-device "
                              f"precision names {' and '.join(DEVICE_TYPES)}, e.g. "
                              f"{{cuda: bf16, cpu: fp32}}.")
        name = value.get(device_type(device), "fp32")
    else:
        name = value
    storage_dtype(name, key)
    return name


def with_resolved_precisions(node: Any, device: Any = None) -> Any:
    """A copy of a `model:` node whose `vit_precision` / `llm_precision` are the names they
    give on `device`; the node itself is left as it is (the run's config keeps the mapping)."""
    node = copy.deepcopy(node)
    for key in PRECISION_KEYS:
        if node is not None and node.get(key) is not None:
            node[key] = resolve_precision(node[key], device, f"model.{key}")
    return node

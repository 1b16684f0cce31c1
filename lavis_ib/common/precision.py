"""Precision names used in configs (`fp32`, `bf16`, `fp16`, `none`) and their torch dtypes.

`model.vit_precision` / `model.llm_precision` name the storage dtype of frozen parts;
`run.amp` names the autocast dtype (`none`: no autocast).
"""
from __future__ import annotations

from typing import Optional

import torch

from lavis_ib.common.errors import ConfigError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def storage_dtype(name: str, key: str = "precision") -> torch.dtype:
    """The dtype of a precision name; `key` names the setting in the error."""
    if name not in DTYPES:
        raise ConfigError(f"{key} must be one of {', '.join(DTYPES)}; got '{name}'.")
    return DTYPES[name]


def autocast_dtype(amp: str) -> Optional[torch.dtype]:
    """The autocast dtype of `run.amp` (None for `none`/`fp32`: no autocast)."""
    return None if amp in ("none", "fp32") else storage_dtype(amp, "run.amp")

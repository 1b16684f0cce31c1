"""Seeding of the global random generators (Python, NumPy, torch).

Training seeds `run.seed` before building the model, so every rank initialises the
randomly drawn parts identically (FSDP and DDP need equal weights), and `run.seed + rank`
before the first step, so dropout and augmentation differ per rank. Export seeds
`run.seed` again to redraw the same randomly initialised weights the run started from.
"""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (CUDA included) with `seed`."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)

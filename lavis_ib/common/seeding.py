"""Seeding of the global random generators (Python, NumPy, torch), in one place.

Training seeds `run.seed` before building the model (every rank draws equal random weights,
as FSDP and DDP need) and `run.seed + rank` before the first step (dropout and augmentation
differ per rank); export seeds `run.seed` again to redraw the weights the run started from."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (CUDA included) with `seed`."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)

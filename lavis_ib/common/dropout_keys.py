"""Per-sample dropout keys: the Q-Former's dropout masks as a function of (seed, step,
sample's slot in the step's global batch), so any split of the global batch over
processes and accumulation steps draws the same masks (docs/determinism.md).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

#: the batch field holding a (B, 2) int64 tensor of 32-bit key words, one row per sample:
#: the training loader adds it to each micro-batch and the model reads it
#: (`lavis_ib.models.components.sample_dropout`); a batch without it (a user's own loop,
#: inference) gets ordinary dropout
FIELD = "_dropout_keys"
_STREAM = 0x64726F70   # keeps these keys apart from every other seeded draw of a run


def dropout_keys(seed: int, step: int, slots: Sequence[int]) -> torch.Tensor:
    """(len(slots), 2) int64 key words in [0, 2**32): sample at global-batch slot `slot`
    of optimizer step `step` (0-based) of a run seeded with `seed`."""
    rows = [np.random.SeedSequence([_STREAM, int(seed) & 0xFFFFFFFF, int(step), int(slot)])
            .generate_state(2, dtype=np.uint32) for slot in slots]
    array = np.asarray(rows, dtype=np.int64).reshape(len(rows), 2)
    return torch.from_numpy(array)

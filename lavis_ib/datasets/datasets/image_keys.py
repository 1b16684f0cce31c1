"""Stable integer keys of images, for losses that must know which captions share an image.

BLIP-2's stage-1 contrastive loss treats two captions of one image as positives of each
other (LAVIS's `image_id` branch); these keys say which those are, across datasets and ranks."""
from __future__ import annotations

import hashlib
from typing import Any

import torch


def image_key(dataset: str, image_id: Any) -> int:
    """A non-negative int64 key of image `image_id` of dataset `dataset` (any strings).

    A 63-bit hash of the dataset's identity and the image's own id: equal for every caption
    of an image, distinct across datasets that share a micro-batch, and the same in every
    process (no Python `hash`, which is salted).
    """
    digest = hashlib.blake2b(f"{dataset}\x1f{image_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2 ** 63 - 1)


def image_key_tensor(dataset: str, image_id: Any) -> torch.Tensor:
    """`image_key` as a 0-dim int64 tensor (the collater stacks it into a (B,) tensor)."""
    return torch.tensor(image_key(dataset, image_id), dtype=torch.long)

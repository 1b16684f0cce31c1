"""Every media file of a built split opened the way training and evaluation open it, so a
missing or corrupt image is found by `lavis-ib data check` instead of being skipped (and
shrinking a metric's denominator) hours into a run.
"""
from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass, field
from typing import Any


@dataclass
class MediaCheck:
    """What `check_media` found in one split.

    Attributes:
        files: distinct media files of the split.
        decoded: True when each was decoded, False when only its existence was checked.
        unreadable: {path: (reason, samples that use the file)}.
    """

    files: int = 0
    decoded: bool = False
    unreadable: dict[str, tuple[str, int]] = field(default_factory=dict)

    @property
    def bad_samples(self) -> int:
        return sum(n for _, n in self.unreadable.values())


def can_check(dataset: Any) -> bool:
    """A map-style dataset with records in memory and a `visual_path` per record."""
    return hasattr(dataset, "annotation") and hasattr(dataset, "visual_path") \
        and hasattr(dataset, "load_visual")


def check_media(dataset: Any, decode: bool = False, desc: str | None = None) -> MediaCheck:
    """Each distinct media file of `dataset` checked once (decoded with `decode`).

    The records are walked and each distinct file (`visual_path`) either checked for
    existence or decoded with the dataset's own `load_visual` (the image decoder of
    `processors.image`, PyAV for videos, the vis_root confinement) with the visual
    processor switched off: the way training and evaluation open it.

    Args:
        dataset: a built map-style dataset (`can_check`).
        decode: decode each file (slow: every image is read); else check it exists.
        desc: a progress bar's name on stderr (None: no bar; `LAVIS_IB_NO_PROGRESS=1` too).
    """
    from lavis_ib.datasets.datasets.base import BadSample

    probe = copy.copy(dataset)
    probe.vis_processor = None      # decode only: no resize, crop or augmentation
    result = MediaCheck(decoded=decode)
    seen: dict[str, str | None] = {}      # path -> reason it is unreadable, or None
    uses: dict[str, int] = {}
    for record in _progress(dataset.annotation, desc):
        path = str(dataset.visual_path(record))
        if path not in seen:
            if decode:
                loaded = probe.load_visual(record)
                seen[path] = loaded.reason if isinstance(loaded, BadSample) else None
            else:
                seen[path] = None if os.path.isfile(path) else "missing"
        uses[path] = uses.get(path, 0) + 1
    result.files = len(seen)
    result.unreadable = {p: (reason, uses[p]) for p, reason in seen.items() if reason is not None}
    return result


def _progress(records: Any, desc: str | None) -> Any:
    if desc is None or os.environ.get("LAVIS_IB_NO_PROGRESS") == "1":
        return records
    from tqdm.auto import tqdm

    return tqdm(records, desc=desc, unit="sample", file=sys.stderr, leave=False,
                dynamic_ncols=True)

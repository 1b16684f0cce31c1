"""Visual Genome region captions (BLIP's ``vg_caption.json``) for pretraining.

A class of its own because the released file names images by absolute paths of the
authors' machine, which must be made relative to the user's images folder first."""
from __future__ import annotations

from typing import Any

from lavis_ib.common.errors import DataError
from lavis_ib.datasets.datasets.caption import CaptionDataset

AUTHORS_PREFIX = "/export/share/datasets/vision/visual-genome/image/"


class VGCaptionDataset(CaptionDataset):
    """`CaptionDataset` over ``vg_caption.json`` with the authors' path prefix cut.

    The released file lists ``{"image": "/export/share/datasets/vision/visual-genome/image/
    1.jpg", "caption", "image_id": "vg_1"}``: absolute paths of the authors' machine. The
    dataset cuts `strip_image_prefix` from each path so it reads relative to the configured
    images folder; a path that still starts with ``/`` after the cut is refused (it would
    read outside that folder) unless the dataset allows it (`allow_outside_root`).
    """

    @classmethod
    def extra_args(cls) -> dict[str, Any]:
        return {**super().extra_args(), "strip_image_prefix": AUTHORS_PREFIX}

    def read_rows(self, ann_paths: list[str]) -> list[dict[str, Any]]:
        rows = super().read_rows(ann_paths)
        prefix = str(self.options["strip_image_prefix"] or "")
        if prefix:
            for row in rows:
                if row["image"].startswith(prefix):
                    row["image"] = row["image"][len(prefix):]
        absolute = sum(1 for row in rows if str(row["image"]).startswith("/"))
        if absolute and not self.allow_outside_root:
            first = next(row["image"] for row in rows if str(row["image"]).startswith("/"))
            raise DataError(f"VGCaptionDataset: {absolute} image path(s) in {ann_paths} are "
                            f"absolute after cutting strip_image_prefix '{prefix}' (e.g. "
                            f"'{first}'); set datasets.vg_caption.strip_image_prefix to the "
                            f"folder your file names, or allow_outside_root: true.")
        return rows

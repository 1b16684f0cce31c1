"""Captioning datasets: training (one sample per caption, caption template as instruction,
normalised caption as target) and evaluation (one sample per image with every reference).

The readers of the three caption file formats (`READERS`) feed both, so COCO, NoCaps,
Flickr30K and TextCaps share one pair of classes."""
from __future__ import annotations

import os
from typing import Any

from lavis_ib.common.errors import ConfigError, DataError, did_you_mean
from lavis_ib.datasets.datasets.annotations import (load_json, load_ocr_tokens, load_records,
                                                    media_field, need, text_field)
from lavis_ib.datasets.datasets.base import BaseDataset, make_instruction
from lavis_ib.datasets.datasets.image_keys import image_key_tensor
from lavis_ib.common.prompts import ocr_prefix
from lavis_ib.processors.text import normalize_caption


def image_id_from_path(path: str) -> int | str:
    """The last ``_``-separated part of the file stem, as LAVIS derives an image id
    (``COCO_val2014_000000184613.jpg`` -> 184613)."""
    stem = os.path.splitext(os.path.basename(path))[0].split("_")[-1]
    return int(stem) if stem.isdigit() else stem


def read_lavis(paths: list[str]) -> list[dict[str, Any]]:
    """`ann_format: lavis`: LAVIS lists ``[{"image", "caption": str | [str], optional
    "image_id"}]``; without image_id the id comes from the file name (`image_id_from_path`)."""
    rows = []
    for path in paths:
        for n, row in enumerate(load_records(path)):
            image = media_field(row, "image", path, n)
            caps = text_field(row, "caption", path, n, many=True) if "caption" in row else []
            for cap in [caps] if isinstance(caps, str) else caps:
                rows.append({"image": image, "image_id": row.get("image_id", image_id_from_path(image)),
                             "caption": cap})
            if not caps:  # an unlabelled image (a test split) still needs a sample
                rows.append({"image": image, "image_id": row.get("image_id", image_id_from_path(image)),
                             "caption": None})
    return rows


def read_coco(paths: list[str]) -> list[dict[str, Any]]:
    """`ann_format: coco`: official COCO-style captions (NoCaps, COCO): ``{"images": [{"id",
    "file_name"}], "annotations": [{"image_id", "caption"}]}``."""
    rows = []
    for path in paths:
        data = load_json(path)
        images = {img["id"]: img["file_name"] for img in need(data, "images", path)}
        seen = set()
        for n, ann in enumerate(data.get("annotations", [])):
            image_id = need(ann, "image_id", path)
            if image_id not in images:
                raise DataError(f"'{path}': caption of image_id {image_id} not in 'images'.")
            seen.add(image_id)
            rows.append({"image": images[image_id], "image_id": image_id,
                         "caption": text_field(ann, "caption", path, n)})
        rows.extend({"image": name, "image_id": i, "caption": None}
                    for i, name in images.items() if i not in seen)
    return rows


def read_textcaps(paths: list[str]) -> list[dict[str, Any]]:
    """`ann_format: textcaps`: official TextCaps ``{"data": [{"image_id", "caption_str"}]}``;
    image ``<image_id>.jpg``; OCR tokens keyed by image_id (Rosetta files)."""
    rows = []
    for path in paths:
        for n, row in enumerate(need(load_json(path), "data", path)):
            image_id = str(need(row, "image_id", path))
            caption = text_field(row, "caption_str", path, n) if "caption_str" in row else None
            rows.append({"image": f"{image_id}.jpg", "image_id": image_id,
                         "caption": caption, "ocr_key": image_id})
    return rows


READERS = {"lavis": read_lavis, "coco": read_coco, "textcaps": read_textcaps}
SAMPLE_UNITS = ("caption", "image")


def group_by_image(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per image_id (first-seen order) with its captions, in file order."""
    by_image: dict[Any, dict[str, Any]] = {}
    for row in rows:
        rec = by_image.setdefault(row["image_id"], {**row, "captions": []})
        rec["captions"].append(row["caption"])
    return list(by_image.values())


class _CaptionBase(BaseDataset):
    @classmethod
    def extra_args(cls) -> dict[str, Any]:
        return {"ann_format": "lavis", "use_ocr": False, "ocr_paths": (), "sample_unit": "caption",
                "image_ids": False}

    def read_rows(self, ann_paths: list[str]) -> list[dict[str, Any]]:
        fmt = self.options["ann_format"]
        if fmt not in READERS:
            raise ConfigError(f"{type(self).__name__}: unknown ann_format '{fmt}'."
                              f"{did_you_mean(fmt, READERS)} Known: {', '.join(READERS)}.")
        rows = READERS[fmt](ann_paths)
        if self.options["use_ocr"]:
            ocr = load_ocr_tokens(list(self.options["ocr_paths"] or ()))
            for row in rows:
                row["ocr_tokens"] = ocr.get(str(row.get("ocr_key")), [])
        return rows


class CaptionDataset(_CaptionBase):
    """Training: ``text_input`` = [OCR prefix] + a caption template (drawn per sample),
    ``text_output`` = the normalised caption; with `image_ids`, ``image_id`` (int64 key).

    Options for pretraining (dataset config keys): `sample_unit` ``caption`` (one sample per
    caption, LAVIS's way) or ``image`` (one sample per image, its caption drawn per epoch
    from the sample's own generator, so a resumed run draws the same captions);
    `image_ids: true` adds ``image_id``, an int64 key shared by an image's captions (the
    stage-1 contrastive loss needs it; off by default because a micro-batch mixing datasets
    needs the same fields in all of them).
    """

    is_train = True
    uses_template = True

    def load_annotations(self, ann_paths: list[str]) -> list[dict[str, Any]]:
        rows = [r for r in self.read_rows(ann_paths) if r["caption"]]
        if not rows:
            raise DataError(f"{type(self).__name__}: no caption in {ann_paths}.")
        unit = self.options["sample_unit"]
        if unit not in SAMPLE_UNITS:
            raise ConfigError(f"{type(self).__name__}: sample_unit '{unit}' is not one of "
                              f"{', '.join(SAMPLE_UNITS)}.{did_you_mean(str(unit), SAMPLE_UNITS)}")
        return group_by_image(rows) if unit == "image" else rows

    def caption_of(self, record: dict[str, Any], index: int, epoch: int) -> str:
        """The record's caption; per image, one drawn by the sample's generator (stream 2)."""
        if "captions" not in record:
            return record["caption"]
        captions = record["captions"]
        return captions[int(self.rng(index, epoch, stream=2).integers(len(captions)))]

    def build_sample(self, record: dict[str, Any], visual: Any, index: int, epoch: int) -> dict[str, Any]:
        prefix = ocr_prefix(record.get("ocr_tokens")) if self.options["use_ocr"] else ""
        sample = {"image": visual, "text_input": prefix + make_instruction(self.text_processor, index, epoch),
                  "text_output": normalize_caption(self.caption_of(record, index, epoch))}
        if self.options["image_ids"]:
            sample["image_id"] = image_key_tensor(str(self.dataset_key()), record["image_id"])
        return sample


class CaptionEvalDataset(_CaptionBase):
    """Evaluation, one sample per image: ``image_id``, ``instance_id`` (= image_id),
    ``references`` (every ground-truth caption, raw), and ``ocr_tokens`` with OCR."""

    def load_annotations(self, ann_paths: list[str]) -> list[dict[str, Any]]:
        by_image: dict[Any, dict[str, Any]] = {}
        for row in self.read_rows(ann_paths):
            rec = by_image.setdefault(row["image_id"], {**row, "references": []})
            if row["caption"]:
                rec["references"].append(str(row["caption"]))
        return list(by_image.values())

    def build_sample(self, record: dict[str, Any], visual: Any, index: int, epoch: int) -> dict[str, Any]:
        sample = {"image": visual, "image_id": record["image_id"], "instance_id": record["image_id"],
                  "references": list(record["references"])}
        if self.options["use_ocr"]:
            sample["ocr_tokens"] = list(record.get("ocr_tokens", []))
        return sample

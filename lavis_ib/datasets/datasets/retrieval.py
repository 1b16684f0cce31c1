"""Image-text retrieval datasets: COCO and Flickr30K Karpathy splits, LAVIS list format.

Training reads one sample per caption for the contrastive and matching losses; evaluation
one per image, plus the caption gallery the `retrieval` task scores against every image."""
from __future__ import annotations

from typing import Any

from lavis_ib.common.errors import DataError
from lavis_ib.datasets.datasets.base import BaseDataset
from lavis_ib.datasets.datasets.caption import group_by_image, read_lavis
from lavis_ib.datasets.datasets.image_keys import image_key_tensor
from lavis_ib.processors.text import normalize_caption


def process_caption(processor: Any, caption: str) -> str:
    """The caption through the split's text processor (LAVIS: ``blip_caption``); without
    one, the same normalisation (lower case, punctuation to spaces, 50 words)."""
    return str(processor(caption)) if processor is not None else normalize_caption(caption)


class RetrievalDataset(BaseDataset):
    """Training split: one sample per (image, caption) row, as LAVIS's retrieval
    finetuning reads the files: ``image``, ``text_input`` (the processed caption),
    ``image_id`` (an int64 key shared by the captions of one image: the contrastive loss
    treats them as positives) and ``instance_id`` (the caption's row)."""

    is_train = True

    def load_annotations(self, ann_paths: list[str]) -> list[dict[str, Any]]:
        rows = [r for r in read_lavis(ann_paths) if r["caption"]]
        if not rows:
            raise DataError(f"RetrievalDataset: no caption in {ann_paths}.")
        for n, row in enumerate(rows):
            row["instance_id"] = str(n)
        return rows

    def build_sample(self, record: dict[str, Any], visual: Any, index: int, epoch: int) -> dict[str, Any]:
        return {"image": visual, "text_input": process_caption(self.text_processor, record["caption"]),
                "image_id": image_key_tensor(str(self.dataset_key()), record["image_id"]),
                "instance_id": record["instance_id"]}


class RetrievalEvalDataset(BaseDataset):
    """Evaluation split: the images in file order, each with its captions.

    A sample is ``image``, ``index``, ``image_id``, ``instance_id``; the gallery the
    retrieval task ranks is in the attributes, under LAVIS's names.

    Attributes:
        text: every caption, processed, in image order.
        image: each image's path (relative to `vis_root`).
        img2txt: ``img2txt[i]``: the indices in `text` of image i's captions.
        txt2img: ``txt2img[t]``: the image index of caption t.

    Raises:
        DataError: an image without any caption (retrieval needs at least one).
    """

    def load_annotations(self, ann_paths: list[str]) -> list[dict[str, Any]]:
        records = group_by_image(read_lavis(ann_paths))
        self.text: list[str] = []
        self.image: list[str] = []
        self.img2txt: list[list[int]] = []
        self.txt2img: list[int] = []
        for i, record in enumerate(records):
            captions = [c for c in record.pop("captions") if c]
            if not captions:
                raise DataError(f"RetrievalEvalDataset: image '{record['image']}' in {ann_paths} has "
                                f"no caption; every gallery image needs at least one.")
            record["captions"] = [str(c) for c in captions]
            self.image.append(record["image"])
            self.img2txt.append(list(range(len(self.text), len(self.text) + len(captions))))
            self.txt2img.extend([i] * len(captions))
            self.text.extend(process_caption(self.text_processor, c) for c in captions)
        return records

    def build_sample(self, record: dict[str, Any], visual: Any, index: int, epoch: int) -> dict[str, Any]:
        return {"image": visual, "index": index, "image_id": record["image_id"],
                "instance_id": record["image_id"]}

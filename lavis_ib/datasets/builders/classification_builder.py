"""Builders of the binary classification held-out datasets (evaluation only, task
``classification``): Hateful Memes and VSR."""
from __future__ import annotations

from lavis_ib.common.registry import registry
from lavis_ib.datasets.builders.base_builder import BaseDatasetBuilder
from lavis_ib.datasets.datasets.classification import ClassificationEvalDataset


@registry.register_builder("hateful_memes")
class HatefulMemesBuilder(BaseDatasetBuilder):
    """Hateful Memes, official jsonl (`hateful_memes`): id, img, text, label.
    Split: val (= dev_seen.jsonl)."""

    eval_dataset_cls = ClassificationEvalDataset
    DATASET_CONFIG_DICT = {"default": "configs/datasets/hateful_memes/defaults.yaml"}
    DATA_SOURCE = "https://hatefulmemeschallenge.com (the challenge's data.zip: img/ + *.jsonl)"
    dataset_kwargs = {"ann_format": "hateful_memes"}


@registry.register_builder("vsr")
class VSRBuilder(BaseDatasetBuilder):
    """VSR zero-shot split, official jsonl (`vsr`): image, caption (the statement), label.
    Images are the COCO 2017 files VSR lists, in one folder. Split: test."""

    eval_dataset_cls = ClassificationEvalDataset
    DATASET_CONFIG_DICT = {"default": "configs/datasets/vsr/defaults.yaml"}
    DATA_SOURCE = "https://github.com/cambridgeltl/visual-spatial-reasoning (splits/zeroshot; images from COCO 2017)"
    dataset_kwargs = {"ann_format": "vsr"}

"""Builders of the image-text retrieval datasets: COCO and Flickr30K, Karpathy splits.

The annotation files are LAVIS's (the same COCO files as ``coco_caption``); ``flickr30k`` is
the captioning entry of Flickr30K, ``flickr30k_retrieval`` this one (LAVIS calls it
``flickr30k``), so one name never means two datasets. Samples: `_RetrievalBuilder`."""
from __future__ import annotations

from lavis_ib.common.registry import registry
from lavis_ib.datasets.builders.base_builder import BaseDatasetBuilder
from lavis_ib.datasets.datasets.retrieval import RetrievalDataset, RetrievalEvalDataset


class _RetrievalBuilder(BaseDatasetBuilder):
    """Training splits yield one sample per caption (``image``, ``text_input``, ``image_id``,
    ``instance_id``); evaluation splits one sample per image, with the caption gallery the
    ``retrieval`` task ranks (lavis_ib.datasets.datasets.retrieval)."""

    train_dataset_cls = RetrievalDataset
    eval_dataset_cls = RetrievalEvalDataset


@registry.register_builder("coco_retrieval")
class COCORetrievalBuilder(_RetrievalBuilder):
    """COCO retrieval, Karpathy splits (5K test), LAVIS lists: image, caption (train: one
    string per row with image_id; val/test: the image's captions). Splits: train, val,
    test (eval task ``retrieval``)."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/coco_retrieval/defaults.yaml"}
    DATA_SOURCE = "LAVIS's coco_karpathy_*.json (the url entries) and https://cocodataset.org (2014 images)"


@registry.register_builder("flickr30k_retrieval")
class Flickr30kRetrievalBuilder(_RetrievalBuilder):
    """Flickr30K retrieval, Karpathy splits (1K test), LAVIS lists: image, caption (the
    image's 5 captions). Splits: val, test (eval task ``retrieval``; BLIP-2 evaluates it
    zero-shot); a project may add a train split (``flickr30k_train.json``: one row per
    caption, with image_id)."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/flickr30k_retrieval/defaults.yaml"}
    DATA_SOURCE = "LAVIS's flickr30k_*.json (the url entries) and the Flickr30K images (flickr30k-images/)"

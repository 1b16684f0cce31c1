"""Builders of the captioning datasets: COCO Caption, NoCaps, Flickr30K, TextCaps, and
Visual Genome region captions (pretraining only).

Each builder names its dataset's official file format and where to get it; the samples
they yield are described on `_CaptionBuilder`."""
from __future__ import annotations

from lavis_ib.common.registry import registry
from lavis_ib.datasets.builders.base_builder import BaseDatasetBuilder
from lavis_ib.datasets.datasets.caption import CaptionDataset, CaptionEvalDataset
from lavis_ib.datasets.datasets.vg_caption import VGCaptionDataset


class _CaptionBuilder(BaseDatasetBuilder):
    """Training splits yield ``image``, ``text_input`` (a caption template; TextCaps starts
    with ``OCR tokens: ...``), ``text_output`` (the normalised caption), and ``image_id``
    with `image_ids: true`; `sample_unit: image` draws one caption per image per epoch
    (lavis_ib.datasets.datasets.caption). Evaluation splits yield one sample per image with
    ``image_id``, ``instance_id``, ``references``."""

    train_dataset_cls = CaptionDataset
    eval_dataset_cls = CaptionEvalDataset
    CONFIG_KWARGS = ("sample_unit", "image_ids")


@registry.register_builder("coco_caption")
class COCOCaptionBuilder(_CaptionBuilder):
    """COCO Caption, Karpathy splits, LAVIS list format (`lavis`): image (path under the
    COCO 2014 images folder), caption (train: one string; val/test: list of 5), optional
    image_id. Splits: train, val, test (eval task ``captioning``)."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/coco_caption/defaults.yaml"}
    DATA_SOURCE = "LAVIS's coco_karpathy_*.json (the url entries) and https://cocodataset.org (2014 images)"
    dataset_kwargs = {"ann_format": "lavis"}


@registry.register_builder("nocaps")
class NoCapsBuilder(_CaptionBuilder):
    """NoCaps, official COCO-style file (`coco`): images[].id/file_name and
    annotations[].image_id/caption (10 per image). Split: val (eval task ``captioning``)."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/nocaps/defaults.yaml"}
    DATA_SOURCE = "https://nocaps.org/download (nocaps_val_4500_captions.json and the Open Images val images)"
    dataset_kwargs = {"ann_format": "coco"}


@registry.register_builder("flickr30k")
class Flickr30kBuilder(_CaptionBuilder):
    """Flickr30K (Karpathy 1K test), LAVIS list format (`lavis`): image, caption (list of
    5 for val/test). Splits: val, test (eval task ``captioning``)."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/flickr30k/defaults.yaml"}
    DATA_SOURCE = "LAVIS's flickr30k_*.json (the url entries) and the Flickr30K images (flickr30k-images/)"
    dataset_kwargs = {"ann_format": "lavis"}


@registry.register_builder("textcaps")
class TextCapsBuilder(_CaptionBuilder):
    """TextCaps, official format (`textcaps`): data[].image_id, caption_str; images
    ``<image_id>.jpg`` in TextVQA's train_images; OCR tokens from the TextVQA Rosetta OCR
    files (`build_info.ocr.<split>`: data[].image_id, ocr_tokens). Splits: train, val
    (eval task ``captioning``; eval samples carry ``ocr_tokens``)."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/textcaps/defaults.yaml"}
    DATA_SOURCE = "https://textvqa.org/textcaps/dataset (annotations; images and Rosetta OCR from TextVQA)"
    dataset_kwargs = {"ann_format": "textcaps", "use_ocr": True}
    OCR_FILES_REQUIRED = True


@registry.register_builder("vg_caption")
class VGCaptionBuilder(BaseDatasetBuilder):
    """Visual Genome region descriptions as image captions (BLIP's ``vg_caption.json``, a
    LAVIS list: image, caption, image_id ``vg_<n>``; several captions per image). The file's
    image paths are absolute paths of the authors' machine: `strip_image_prefix` is cut
    from them, so they read relative to the images folder (all VG images, VG_100K and
    VG_100K_2 together). Split: train (pretraining only)."""

    train_dataset_cls = VGCaptionDataset
    DATASET_CONFIG_DICT = {"default": "configs/datasets/vg_caption/defaults.yaml"}
    DATA_SOURCE = ("LAVIS's vg_caption.json (the url entry) and the Visual Genome images "
                   "(https://cs.stanford.edu/people/rak248/VG_100K_2/images.zip and images2.zip, "
                   "unpacked into one folder)")
    dataset_kwargs = {"ann_format": "lavis"}
    CONFIG_KWARGS = ("sample_unit", "image_ids", "strip_image_prefix")

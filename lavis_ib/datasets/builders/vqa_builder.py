"""Builders of the question-answering datasets and their question-generation variants.

Every builder reads one annotation format of `lavis_ib.datasets.datasets.vqa_formats` (its
reader's docstring names the files and fields read); the samples are described on `_VQABuilder`."""
from __future__ import annotations

from lavis_ib.common.registry import registry
from lavis_ib.datasets.builders.base_builder import BaseDatasetBuilder
from lavis_ib.datasets.datasets.vqa import QGDataset, VQADataset, VQAEvalDataset


def _cfg(name: str) -> dict[str, str]:
    return {"default": f"configs/datasets/{name}/defaults.yaml"}


class _VQABuilder(BaseDatasetBuilder):
    """Training splits yield ``image``, ``text_input`` (templated, OCR prefix for
    OCR-VQA/TextVQA), ``text_output`` (one answer drawn by frequency); evaluation splits add
    ``question_id``, ``question``, ``answers``."""

    train_dataset_cls = VQADataset
    eval_dataset_cls = VQAEvalDataset


@registry.register_builder("coco_vqa")
class COCOVQABuilder(_VQABuilder):
    """VQAv2, official format (`vqav2`): ``*_questions.json`` (data_subtype, questions:
    question_id, image_id, question) + ``*_annotations.json`` (annotations: question_id,
    answers[].answer). Images ``<subtype>/COCO_<subtype>_<image_id:012d>.jpg`` under
    COCO 2014. Splits: train, val (eval task ``vqa``)."""

    DATASET_CONFIG_DICT = _cfg("coco_vqa")
    DATA_SOURCE = "https://visualqa.org/download.html (questions + annotations zips) and COCO 2014 images"
    dataset_kwargs = {"ann_format": "vqav2"}


@registry.register_builder("ok_vqa")
class OKVQABuilder(_VQABuilder):
    """OK-VQA, official format (same layout as VQAv2, `vqav2`): questions file + annotations
    file per split; COCO 2014 images. Splits: train, val (eval task ``vqa``)."""

    DATASET_CONFIG_DICT = _cfg("ok_vqa")
    DATA_SOURCE = "https://okvqa.allenai.org/download.html and COCO 2014 images"
    dataset_kwargs = {"ann_format": "vqav2"}


@registry.register_builder("aok_vqa")
class AOKVQABuilder(_VQABuilder):
    """A-OKVQA, official format (`aokvqa`): ``aokvqa_v1p0_<split>.json`` records with
    question_id, split, image_id, question, choices, correct_choice_idx, direct_answers.
    Images ``<split>2017/<image_id:012d>.jpg`` (COCO 2017). Train: direct answer (drawn by
    frequency from direct_answers); val: ``answers`` + ``choices``/``correct_choice_idx``
    (tasks ``vqa`` and ``multiple_choice``)."""

    DATASET_CONFIG_DICT = _cfg("aok_vqa")
    DATA_SOURCE = "https://github.com/allenai/aokvqa (aokvqa_v1p0.tar.gz) and COCO 2017 images"
    dataset_kwargs = {"ann_format": "aokvqa"}


@registry.register_builder("ocr_vqa")
class OCRVQABuilder(_VQABuilder):
    """OCR-VQA, official `dataset.json` (`ocrvqa`): {asin: imageURL, questions, answers,
    split (1 train, 2 val, 3 test)}; images ``<asin><ext of imageURL>`` as the official
    download script names them. OCR tokens from `build_info.ocr.<split>` files (Rosetta
    layout or {asin: [tokens]}); instruction starts with ``OCR tokens: ...``.
    Splits: train, val, test (eval task ``vqa``)."""

    DATASET_CONFIG_DICT = _cfg("ocr_vqa")
    DATA_SOURCE = "https://ocr-vqa.github.io (dataset.json + loadDataset.py for the images)"
    dataset_kwargs = {"ann_format": "ocrvqa", "use_ocr": True}
    OCR_FILES_REQUIRED = True


@registry.register_builder("gqa")
class GQABuilder(_VQABuilder):
    """GQA, official questions format (`gqa`): {question_id: imageId, question, answer}
    (LAVIS's list form with image/question/answer is read too); images ``<imageId>.jpg``.
    Split: test = test-dev balanced (eval task ``gqa``)."""

    DATASET_CONFIG_DICT = _cfg("gqa")
    DATA_SOURCE = "https://cs.stanford.edu/people/dorarad/gqa/download.html"
    dataset_kwargs = {"ann_format": "gqa"}


@registry.register_builder("textvqa")
class TextVQABuilder(_VQABuilder):
    """TextVQA, official ``TextVQA_0.5.1_<split>.json`` (`textvqa`): data[].question_id,
    image_id, question, answers; OCR tokens from the record's ocr_tokens or the Rosetta OCR
    file (`build_info.ocr`). Images ``<image_id>.jpg`` (train_images/ for train and val).
    Split: val (eval task ``vqa``, ``ocr_tokens`` in every sample)."""

    DATASET_CONFIG_DICT = _cfg("textvqa")
    DATA_SOURCE = "https://textvqa.org/dataset (annotations, Rosetta OCR, train_val_images)"
    dataset_kwargs = {"ann_format": "textvqa", "use_ocr": True}


@registry.register_builder("vizwiz_vqa")
class VizWizVQABuilder(_VQABuilder):
    """VizWiz-VQA, official ``<split>.json`` (`vizwiz`): image, question, answers[].answer
    (none in test); question_id = the image file's stem. Images per split folder
    (`build_info.images.storage` may map split -> folder). Splits: val, test (task ``vqa``)."""

    DATASET_CONFIG_DICT = _cfg("vizwiz_vqa")
    DATA_SOURCE = "https://vizwiz.org/tasks-and-datasets/vqa/ (Annotations.zip, val.zip, test.zip)"
    dataset_kwargs = {"ann_format": "vizwiz"}


class _QGBuilder(BaseDatasetBuilder):
    """Question generation from a QA dataset: training only (QG templates)."""

    train_dataset_cls = QGDataset
    eval_dataset_cls = None


@registry.register_builder("coco_vqg")
class COCOVQGBuilder(_QGBuilder):
    """VQAv2 inverted (`vqav2` format as `coco_vqa`): instruction = QG template with an
    answer drawn by frequency, target = the question. Split: train."""

    DATASET_CONFIG_DICT = _cfg("coco_vqg")
    DATA_SOURCE = COCOVQABuilder.DATA_SOURCE
    dataset_kwargs = {"ann_format": "vqav2"}


@registry.register_builder("ok_vqg")
class OKVQGBuilder(_QGBuilder):
    """OK-VQA inverted (`vqav2` format as `ok_vqa`). Split: train."""

    DATASET_CONFIG_DICT = _cfg("ok_vqg")
    DATA_SOURCE = OKVQABuilder.DATA_SOURCE
    dataset_kwargs = {"ann_format": "vqav2"}


@registry.register_builder("aok_vqg")
class AOKVQGBuilder(_QGBuilder):
    """A-OKVQA inverted (`aokvqa` format as `aok_vqa`, answer from direct_answers). Split: train."""

    DATASET_CONFIG_DICT = _cfg("aok_vqg")
    DATA_SOURCE = AOKVQABuilder.DATA_SOURCE
    dataset_kwargs = {"ann_format": "aokvqa"}

"""Builders of the multiple-choice held-out datasets (task ``multiple_choice``):
ScienceQA (image-context subset) and IconQA (multi-text-choice). Zero-shot evaluation
uses the test split; a `train` split (the same problems.json) serves finetuning."""
from __future__ import annotations

from lavis_ib.common.registry import registry
from lavis_ib.datasets.builders.base_builder import BaseDatasetBuilder
from lavis_ib.datasets.datasets.multiple_choice import MultipleChoiceDataset, MultipleChoiceEvalDataset


@registry.register_builder("scienceqa")
class ScienceQABuilder(BaseDatasetBuilder):
    """ScienceQA, official problems.json (`scienceqa`): question, choices, answer (index),
    hint (-> ``context``), image, split; only problems with an image. Images
    ``<split>/<pid>/image.png``. Splits: test (zero-shot); train/val/minival by name
(training: ranking prompt with options -> the correct option)."""

    train_dataset_cls = MultipleChoiceDataset
    eval_dataset_cls = MultipleChoiceEvalDataset
    DATASET_CONFIG_DICT = {"default": "configs/datasets/scienceqa/defaults.yaml"}
    DATA_SOURCE = "https://github.com/lupantech/ScienceQA (problems.json; images from its Google Drive)"
    dataset_kwargs = {"ann_format": "scienceqa"}


@registry.register_builder("iconqa")
class IconQABuilder(BaseDatasetBuilder):
    """IconQA, official problems.json (`iconqa`; pid_splits.json optional): question,
    choices, answer (index), ques_type (choose_txt kept), split. Images
    ``<split>/choose_txt/<pid>/image.png`` under iconqa_data/iconqa. Split: test
(train/val by name)."""

    train_dataset_cls = MultipleChoiceDataset
    eval_dataset_cls = MultipleChoiceEvalDataset
    DATASET_CONFIG_DICT = {"default": "configs/datasets/iconqa/defaults.yaml"}
    DATA_SOURCE = "https://iconqa.github.io (iconqa_data.zip)"
    dataset_kwargs = {"ann_format": "iconqa"}

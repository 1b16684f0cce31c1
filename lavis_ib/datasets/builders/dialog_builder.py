"""Builder of Visual Dialog (evaluation only, task ``dialog``).

A held-out dataset of the zero-shot protocol: it reads the official v1.0 files as they are
downloaded, so no conversion step stands between the user and the benchmark."""
from __future__ import annotations

from lavis_ib.common.registry import registry
from lavis_ib.datasets.builders.base_builder import BaseDatasetBuilder
from lavis_ib.datasets.datasets.dialog import VisDialEvalDataset


@registry.register_builder("visdial")
class VisDialBuilder(BaseDatasetBuilder):
    """Visual Dialog v1.0, official format: split, data.questions, data.answers,
    data.dialogs[].image_id/caption/dialog[].question/answer/answer_options/gt_index.
    Images ``VisualDialog_<split>_<image_id:012d>.jpg``. Split: val (10 rounds per image)."""

    eval_dataset_cls = VisDialEvalDataset
    DATASET_CONFIG_DICT = {"default": "configs/datasets/visdial/defaults.yaml"}
    DATA_SOURCE = "https://visualdialog.org/data (visdial_1.0_val.zip and VisualDialog_val2018.zip)"

"""Builders of the video QA held-out datasets (task ``video_qa``): MSVD-QA, MSRVTT-QA
(ranking over the training answer vocabulary) and iVQA (generation, 5 answers)."""
from __future__ import annotations

from typing import Any

from lavis_ib.common.registry import registry
from lavis_ib.datasets.builders.base_builder import BaseDatasetBuilder
from lavis_ib.datasets.datasets.video_qa import VideoQADataset, VideoQAEvalDataset


class _VideoQABuilder(BaseDatasetBuilder):
    train_dataset_cls = VideoQADataset
    eval_dataset_cls = VideoQAEvalDataset
    data_type = "videos"

    def split_kwargs(self, split: str, cls: type) -> dict[str, Any]:
        kwargs = super().split_kwargs(split, cls)
        if cls is VideoQAEvalDataset:
            info = self.config.build_info
            if info.get("answer_list") is not None:
                kwargs["answer_list_paths"] = self._files(info.answer_list, "answer list (build_info.answer_list)")
            elif "train" in info.annotations:
                kwargs["train_ann_paths"] = self._files(info.annotations.train,
                                                        "annotation file (build_info.annotations.train)")
        return kwargs


@registry.register_builder("msvd_qa")
class MSVDQABuilder(_VideoQABuilder):
    """MSVD-QA, LAVIS format (`lavis`): video (file name), question, answer, question_id;
    answer vocabulary from LAVIS's train_ans2label.json. Splits: val, test (add train to finetune)."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/msvd_qa/defaults.yaml"}
    DATA_SOURCE = "LAVIS's msvd qa_*.json (the url entries) and the MSVD YouTubeClips videos"
    dataset_kwargs = {"ann_format": "lavis"}


@registry.register_builder("msrvtt_qa")
class MSRVTTQABuilder(_VideoQABuilder):
    """MSRVTT-QA, LAVIS format (`lavis`; official video_id/question/answer/id records also
    read, video ``video<id>.mp4``); vocabulary from train_ans2label.json. Splits: val, test
    (add train to finetune)."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/msrvtt_qa/defaults.yaml"}
    DATA_SOURCE = "LAVIS's msrvtt qa_*.json (the url entries) and the MSR-VTT videos"
    dataset_kwargs = {"ann_format": "lavis"}


@registry.register_builder("ivqa")
class IVQABuilder(_VideoQABuilder):
    """iVQA, official csv (`ivqa`): video_id, start, end, question, answer1..answer5;
    clips ``<video_id>_<start>_<end>.mp4``; vocabulary from the train csv (build_info.answer_list).
    Splits: val, test (add train to finetune)."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/ivqa/defaults.yaml"}
    DATA_SOURCE = "https://antoyang.github.io/just-ask.html (iVQA annotations and clips)"
    dataset_kwargs = {"ann_format": "ivqa"}

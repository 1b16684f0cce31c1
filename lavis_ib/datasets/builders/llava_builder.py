"""Builders of the three LLaVA-Instruct-150K parts, mixed as three datasets (docs/protocol.md).

Three builders rather than one, as the paper counts the parts: the mixer weighs each by the
square root of its own size."""
from __future__ import annotations

from lavis_ib.common.registry import registry
from lavis_ib.datasets.builders.base_builder import BaseDatasetBuilder
from lavis_ib.datasets.datasets.llava import LlavaDataset


class _LlavaBuilder(BaseDatasetBuilder):
    """LLaVA-Instruct-150K, official format: records with image (COCO train2017 file name)
    and conversations[].from/value. One sample per assistant turn; training only; the
    config key `max_history_chars` bounds the instruction."""

    train_dataset_cls = LlavaDataset
    eval_dataset_cls = None
    DATA_SOURCE = ("https://huggingface.co/datasets/liuhaotian/LLaVA-Instruct-150K (the url entries) "
                   "and COCO train2017 images")
    CONFIG_KWARGS = ("max_history_chars",)


@registry.register_builder("llava_conversation")
class LlavaConversationBuilder(_LlavaBuilder):
    """conversation_58k.json (multi-turn). Split: train."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/llava_conversation/defaults.yaml"}


@registry.register_builder("llava_detail")
class LlavaDetailBuilder(_LlavaBuilder):
    """detail_23k.json (one turn each). Split: train."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/llava_detail/defaults.yaml"}


@registry.register_builder("llava_reasoning")
class LlavaReasoningBuilder(_LlavaBuilder):
    """complex_reasoning_77k.json (one turn each). Split: train."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/llava_reasoning/defaults.yaml"}

"""`video_qa`: MSVD-QA, MSRVTT-QA (ranking the answer vocabulary) and iVQA (generation).

The VQA task applied to frames: a video sample fills the same ``image`` key, so only the
vocabulary hand-over and the default metric differ (`VideoQATask`)."""
from __future__ import annotations

from typing import Any, Mapping

from lavis_ib.common.errors import DataError
from lavis_ib.common.registry import registry
from lavis_ib.tasks.vqa import AnswerTask


@registry.register_task("video_qa")
class VideoQATask(AnswerTask):
    """Video question answering over 4 frames (the model handles (B, C, T, H, W)).

    Sample keys: ``image`` (B, C, T, H, W), ``question_id``, ``question``, ``text_input``,
    ``answers`` (iVQA: 5). The dataset object's ``answer_list`` (the train-set answer
    vocabulary) is the candidate list of ``candidates: answer_list``; the evaluation loop
    hands it over through ``task.before_evaluation(model, dataset)``. Prompt placeholder:
    the question.

    Settings as `vqa`; ``metric``: ``exact`` (default; MSVD/MSRVTT accuracy) or ``ivqa``
    (min(1, matches / 2)). Metrics: ``{"acc"}`` in percent.
    """

    NAME = "video_qa"
    PROMPT_FIELDS = ("question",)
    DEFAULT_METRIC = "exact"
    DEFAULTS_FROM = "ivqa"

    def valid_step(self, model: Any, samples: Mapping[str, Any]) -> list[dict[str, Any]]:
        image = samples.get("image")
        if image is not None and getattr(image, "dim", lambda: 5)() != 5:
            raise DataError(f"{self.dataset_name}: video_qa expects video batches "
                            f"(B, C, T, H, W); got image shape {tuple(image.shape)}.")
        return super().valid_step(model, samples)

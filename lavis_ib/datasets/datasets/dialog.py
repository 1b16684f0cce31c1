"""Visual Dialog evaluation: one sample per dialog round.

Each round carries the dialog so far as its history, so the `dialog` task ranks a round's
100 answers with the context a person had (format and sample: `VisDialEvalDataset`)."""
from __future__ import annotations

from typing import Any

from lavis_ib.datasets.datasets.annotations import load_json, need
from lavis_ib.datasets.datasets.base import BaseDataset


def _question(text: str) -> str:
    text = str(text).strip()
    return text if text.endswith("?") else text + "?"


class VisDialEvalDataset(BaseDataset):
    """Visual Dialog rounds with their 100 candidate answers.

    Official v1.0 format: ``{"split": "val2018", "data": {"questions": [str], "answers":
    [str], "dialogs": [{"image_id", "caption", "dialog": [{"question": qi, "answer": ai,
    "answer_options": [100 answer indices], "gt_index"}]}]}}``. Image
    ``VisualDialog_<split>_<image_id:012d>.jpg`` (the official file names).

    Sample: ``image``, ``instance_id`` ("<image_id>_<round>", rounds from 1), ``question``
    (the round's question, with "?"), ``history`` (the caption, then every earlier round as
    "<question> <answer>", joined with ". " -- e.g. "a man on a bike. is he moving? yes"),
    ``candidates`` (the round's 100 answers), ``label`` (index of the ground truth in
    `candidates`; rounds without gt_index -- the test split -- are left out).
    """

    def load_annotations(self, ann_paths: list[str]) -> list[dict[str, Any]]:
        rounds = []
        for path in ann_paths:
            data = load_json(path)
            split, body = need(data, "split", path), need(data, "data", path)
            questions, answers = need(body, "questions", path), need(body, "answers", path)
            for dialog in need(body, "dialogs", path):
                image_id = int(need(dialog, "image_id", path))
                history = [str(need(dialog, "caption", path))]
                for r, turn in enumerate(need(dialog, "dialog", path), 1):
                    question = _question(questions[need(turn, "question", path)])
                    answer = answers[turn["answer"]] if "answer" in turn else None
                    if "gt_index" in turn and "answer_options" in turn:
                        rounds.append({"image": f"VisualDialog_{split}_{image_id:012d}.jpg",
                                       "instance_id": f"{image_id}_{r}", "question": question,
                                       "history": ". ".join(history),
                                       "candidates": [answers[i] for i in turn["answer_options"]],
                                       "label": int(turn["gt_index"])})
                    if answer is not None:
                        history.append(f"{question} {answer}")
        return rounds

    def build_sample(self, record: dict[str, Any], visual: Any, index: int, epoch: int) -> dict[str, Any]:
        return {"image": visual, **{k: record[k] for k in
                                    ("instance_id", "question", "history", "candidates", "label")}}

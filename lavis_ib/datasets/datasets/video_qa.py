"""Video question answering: MSVD-QA, MSRVTT-QA, iVQA.

Video samples fill the same ``image`` key as images (a (C, T, H, W) tensor), so the models
and the `vqa`-style tasks need nothing video-specific; evaluation sets also carry the
training answer vocabulary that ranking reads (`VideoQAEvalDataset.answer_list`)."""
from __future__ import annotations

import os
from typing import Any

from lavis_ib.common.errors import ConfigError, DataError
from lavis_ib.datasets.datasets.annotations import load_csv, load_json, media_field, need
from lavis_ib.datasets.datasets.base import BadSample, BaseDataset, confine, draw_by_frequency, make_instruction
from lavis_ib.processors.text import normalize_question


def read_lavis(paths: list[str]) -> list[dict[str, Any]]:
    """`ann_format: lavis`: LAVIS lists ``[{"video", "question", "answer", optional
    "question_id"}]``; official MSRVTT-QA records ``{"video_id": n, "question", "answer",
    "id"}`` are read too (video ``video<n>.mp4``)."""
    records = []
    for path in paths:
        for n, row in enumerate(load_json(path)):
            if "video" in row:
                video = media_field(row, "video", path, n)
            else:
                video = f"video{int(need(row, 'video_id', path))}.mp4"
            answer = need(row, "answer", path)
            records.append({"question_id": row.get("question_id", row.get("id", n)), "video": video,
                            "question": need(row, "question", path),
                            "answers": [str(a) for a in answer] if isinstance(answer, list) else [str(answer)]})
    return records


def read_ivqa(paths: list[str]) -> list[dict[str, Any]]:
    """`ann_format: ivqa`: the official iVQA csv (video_id, start, end, question,
    answer1..answer5); video ``<video_id>_<start>_<end>.mp4``."""
    records = []
    for path in paths:
        for row in load_csv(path):
            video = f"{need(row, 'video_id', path)}_{int(float(need(row, 'start', path)))}_" \
                    f"{int(float(need(row, 'end', path)))}"
            answers = [row[k] for k in sorted(row) if k.startswith("answer") and row[k]]
            records.append({"question_id": video, "video": f"{video}.mp4",
                            "question": need(row, "question", path), "answers": answers})
    return records


READERS = {"lavis": read_lavis, "ivqa": read_ivqa}


class _VideoQABase(BaseDataset):
    """Videos go through the ``video_train`` / ``video_eval`` processors (PyAV, 4 frames
    sampled uniformly) and give ``image`` tensors of shape (C, T, H, W); an unreadable
    video yields a `BadSample`."""

    @classmethod
    def extra_args(cls) -> dict[str, Any]:
        return {"ann_format": "lavis", "answer_list_paths": (), "train_ann_paths": ()}

    def read(self, paths: list[str]) -> list[dict[str, Any]]:
        fmt = self.options["ann_format"]
        if fmt not in READERS:
            raise ConfigError(f"{type(self).__name__}: unknown ann_format '{fmt}'; known: {', '.join(READERS)}.")
        return READERS[fmt](paths)

    def load_annotations(self, ann_paths: list[str]) -> list[dict[str, Any]]:
        return self.read(ann_paths)

    def visual_path(self, record: dict[str, Any]) -> str:
        return os.path.join(self.vis_root, record["video"])

    def load_visual(self, record: dict[str, Any]) -> Any:
        from lavis_ib.processors.video import read_video_frames

        outside = confine(self.vis_root, record["video"], self.allow_outside_root)
        if outside is not None:
            return outside
        path = self.visual_path(record)
        if not os.path.isfile(path):
            return BadSample(path, "missing")
        try:
            return self.vis_processor(path) if self.vis_processor else read_video_frames(path)
        except DataError as exc:
            return BadSample(path, str(exc))


class VideoQADataset(_VideoQABase):
    """Training: ``image`` (C,T,H,W), ``text_input`` (templated question), ``text_output``
    (an answer drawn by frequency)."""

    is_train = True
    uses_template = True

    def build_sample(self, record: dict[str, Any], visual: Any, index: int, epoch: int) -> dict[str, Any]:
        return {"image": visual,
                "text_input": make_instruction(self.text_processor, index, epoch, question=record["question"]),
                "text_output": draw_by_frequency(record["answers"], self.rng(index, epoch)).strip()}


class VideoQAEvalDataset(_VideoQABase):
    """Evaluation: ``image``, ``question_id``, ``question``, ``text_input``, ``answers``."""

    _answer_list: list[str] | None = None

    @property
    def answer_list(self) -> list[str]:
        """The training answer vocabulary (ranking candidates), in file order.

        Read from `answer_list_paths` (a JSON list, LAVIS's ``{answer: label}``
        train_ans2label.json, or the iVQA train csv), or collected from `train_ann_paths`
        when no list file is configured.
        """
        if self._answer_list is None:
            if self.options["answer_list_paths"]:
                answers: list[str] = []
                for path in self.options["answer_list_paths"]:
                    if path.endswith(".csv"):   # iVQA: the train csv itself
                        answers.extend(a for r in self.read([path]) for a in r["answers"])
                        continue
                    data = load_json(path)
                    items = sorted(data, key=data.get) if isinstance(data, dict) else data
                    answers.extend(str(a) for a in items)
            elif self.options["train_ann_paths"]:
                answers = [a for r in self.read(list(self.options["train_ann_paths"])) for a in r["answers"]]
            else:
                raise DataError(f"{type(self).__name__}: no answer list; set build_info.answer_list "
                                f"(or list the train split) in the dataset config.")
            self._answer_list = list(dict.fromkeys(answers))
        return self._answer_list

    def build_sample(self, record: dict[str, Any], visual: Any, index: int, epoch: int) -> dict[str, Any]:
        question = str(record["question"])
        text = self.text_processor(question) if self.text_processor else normalize_question(question)
        return {"image": visual, "question_id": record["question_id"], "question": question,
                "text_input": text, "answers": list(record["answers"])}

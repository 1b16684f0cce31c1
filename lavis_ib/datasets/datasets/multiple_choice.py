"""Multiple-choice datasets: ScienceQA (image-context subset) and IconQA (multi-text-choice
subset), read from their official ``problems.json``.

Evaluation gives the `multiple_choice` task each question's options to rank; training, for
finetuning, writes the same ranking prompt with the correct option as the target."""
from __future__ import annotations

from typing import Any

from lavis_ib.common.errors import DataError
from lavis_ib.datasets.datasets.annotations import load_json, media_field, need
from lavis_ib.datasets.datasets.vqa import VQAEvalDataset

TRAIN_PROMPTS = {
    "scienceqa": "Context: {context} Question: {question} Options: {options}. Answer:",
    "iconqa": "Question: {question} Options: {options}. Short answer:",
}


def options_text(choices: list[str]) -> str:
    """``(a) x (b) y ...``: the options as the ranking prompts show them."""
    return " ".join(f"({chr(ord('a') + i)}) {c}" for i, c in enumerate(choices))


def _mc_record(pid: str, item: dict[str, Any], image: str, path: str) -> dict[str, Any]:
    choices = [str(c) for c in need(item, "choices", path)]
    idx = int(need(item, "answer", path))
    if not 0 <= idx < len(choices):
        raise DataError(f"'{path}' problem {pid}: answer index {idx} outside its {len(choices)} choices.")
    return {"question_id": pid, "question": need(item, "question", path), "image": image,
            "choices": choices, "correct_choice_idx": idx, "answers": [choices[idx]]}


def read_scienceqa(paths: list[str], split: str | None = None) -> list[dict[str, Any]]:
    """`ann_format: scienceqa`: ``{pid: {"question", "choices", "answer": index, "hint",
    "image": file | null, "split"}}``; image ``<split>/<pid>/<image>``; problems without an
    image are left out (the IMG subset of the paper)."""
    records = []
    for path in paths:
        for pid, item in load_json(path).items():
            if not item.get("image") or (split is not None and item.get("split") != split):
                continue
            image = media_field(item, "image", path, pid)
            rec = _mc_record(pid, item, f"{item['split']}/{pid}/{image}", path)
            rec["context"] = str(item.get("hint") or "")
            records.append(rec)
    return records


def read_iconqa(paths: list[str], split: str | None = None) -> list[dict[str, Any]]:
    """`ann_format: iconqa`: ``{pid: {"question", "choices", "answer": index, "ques_type",
    "split"}}`` (a ``pid_splits.json`` ``{"choose_txt_<split>": [pid, ...]}`` listed as a
    second file supplies the split when records lack it); only ``choose_txt`` problems;
    image ``<split>/choose_txt/<pid>/image.png``."""
    problems, pid_split = {}, {}
    for path in paths:
        data = load_json(path)
        if data and all(isinstance(v, list) for v in data.values()):  # pid_splits.json
            for key, pids in data.items():
                pid_split.update({str(p): key.rsplit("_", 1)[-1] for p in pids})
        else:
            problems.update({str(k): (v, path) for k, v in data.items()})
    records = []
    for pid, (item, path) in problems.items():
        item_split = item.get("split") or pid_split.get(pid)
        if item.get("ques_type", "choose_txt") != "choose_txt":
            continue
        if item_split is None:
            raise DataError(f"IconQA problem {pid} has no split; list pid_splits.json with problems.json.")
        if split is not None and item_split != split:
            continue
        records.append(_mc_record(pid, item, f"{item_split}/choose_txt/{pid}/image.png", path))
    return records


class MultipleChoiceEvalDataset(VQAEvalDataset):
    """Evaluation with choices (ScienceQA, IconQA); `split` selects the problems.

    Samples: ``image``, ``question_id``, ``question``, ``text_input`` (normalised question),
    ``choices``, ``correct_choice_idx``, ``answers`` ([the correct choice]) and, for
    ScienceQA, ``context`` (the problem's hint, may be "").
    """

    READERS = {"scienceqa": read_scienceqa, "iconqa": read_iconqa}

    @classmethod
    def extra_args(cls) -> dict[str, Any]:
        return {"ann_format": "scienceqa", "split": None, "use_ocr": False, "ocr_paths": ()}


class MultipleChoiceDataset(MultipleChoiceEvalDataset):
    """Training on the correct option: ``text_input`` = `TRAIN_PROMPTS[ann_format]`
    filled with context, question and options; ``text_output`` = the correct option.

    For finetuning (e.g. the ScienceQA row of the paper's Table 3): the prompt is the
    zero-shot ranking prompt (docs/protocol.md) with the options shown as ``(a) x (b) y``,
    so that training and option ranking see the same instruction.
    """

    is_train = True

    def build_sample(self, record: dict[str, Any], visual: Any, index: int, epoch: int) -> dict[str, Any]:
        fields = {"context": record.get("context", ""), "question": str(record["question"]).strip(),
                  "options": options_text(record["choices"])}
        text = TRAIN_PROMPTS[self.options["ann_format"]]
        for key, value in fields.items():   # replace, not format: braces in the text stay literal
            text = text.replace("{" + key + "}", value)
        return {"image": visual, "text_input": text,
                "text_output": record["choices"][record["correct_choice_idx"]]}

"""Files for the evaluation servers that hold a split's answers (VizWiz-VQA test-dev,
A-OKVQA test): a split evaluated without answers gets, beside its predictions, the JSON
its server accepts, so the paper's test numbers are one upload away.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping, Sequence

from lavis_ib.common.config import builder_name
from lavis_ib.common.durable_files import write_json_atomic
from lavis_ib.common.errors import DataError

logger = logging.getLogger(__name__)

#: the builders whose unanswered splits a server scores, and that server's format
SERVER_OF_BUILDER = {"vizwiz_vqa": "vizwiz", "aok_vqa": "aokvqa"}
#: A-OKVQA's two settings, the keys of its predictions file (allenai/aokvqa README)
AOKVQA_FIELDS = ("multiple_choice", "direct_answer")
FOLDER = "submissions"


def server_split_metrics(num_samples: int) -> dict[str, int]:
    """The metrics.json of a split without answers: no score here, its server gives it."""
    return {"num_samples": int(num_samples), "num_scored": 0}


def scored_by_server(metrics: Mapping[str, Any]) -> bool:
    """Whether a split's metrics are those of a split without answers (the report reads
    its numbers from another split)."""
    return isinstance(metrics, Mapping) and metrics.get("num_scored") == 0


def vizwiz_results(records: Sequence[Mapping[str, Any]],
                   image_of: Mapping[Any, str]) -> list[dict[str, str]]:
    """VizWiz-VQA's results file: ``[{"image": "VizWiz_test_00000000.jpg", "answer": str}]``,
    one entry per question (a VizWiz image has one question), in record order."""
    missing = [r["id"] for r in records if r["id"] not in image_of]
    if missing:
        raise DataError(f"VizWiz submission: no image file for question id {missing[0]!r}.")
    return [{"image": str(image_of[r["id"]]), "answer": str(r["answer"])} for r in records]


def aokvqa_results(records: Sequence[Mapping[str, Any]], field: str) -> dict[str, dict[str, str]]:
    """A-OKVQA's predictions file: ``{question_id: {field: prediction}}``, `field` one of
    `AOKVQA_FIELDS` (the README lets either be omitted; the multiple-choice prediction is
    the chosen option's text)."""
    if field not in AOKVQA_FIELDS:
        raise ValueError(f"A-OKVQA has no setting '{field}'; it has {AOKVQA_FIELDS}.")
    return {str(r["id"]): {field: str(r["answer"])} for r in records}


def merge_aokvqa(existing: Mapping[str, Any], part: Mapping[str, Mapping[str, str]],
                 field: str) -> dict[str, dict[str, str]]:
    """`existing` with its `field` answers replaced by `part`'s (the other setting's answers
    kept), so one file holds both settings of one evaluation."""
    merged: dict[str, dict[str, str]] = {}
    for qid, entry in existing.items():
        kept = {k: v for k, v in dict(entry).items() if k != field}
        if kept:
            merged[str(qid)] = kept
    for qid, entry in part.items():
        merged.setdefault(qid, {}).update(entry)
    return merged


def split_of(out_dir: str, dataset_name: str) -> str:
    """The split of an evaluation folder ``<dataset>_<split>`` (runners/eval_loop.py)."""
    folder = os.path.basename(os.path.normpath(out_dir))
    prefix = f"{dataset_name}_"
    return folder[len(prefix):] if folder.startswith(prefix) else folder


def write_submission(task: Any, records: Sequence[Mapping[str, Any]], dataset: Any,
                     out_dir: str, field: str) -> str | None:
    """Write the server's file for a split without answers; returns its path, or None for
    a dataset no server scores.

    Files go to ``<eval>/submissions/``: ``<dataset>_<split>.json`` (VizWiz's results
    list, or this entry's A-OKVQA setting alone), and for A-OKVQA also
    ``aokvqa_predictions_<split>.json``, both settings of the evaluation in one file.

    Args:
        task: the evaluation task (its `dataset_name` and entry `cfg` name the builder).
        dataset: the evaluated split (its `annotation` gives VizWiz's image file names).
        out_dir: the split's folder, ``<eval>/<dataset>_<split>``.
        field: ``direct_answer`` or ``multiple_choice`` (A-OKVQA's setting of this task).
    """
    server = SERVER_OF_BUILDER.get(builder_name(task.dataset_name, task.cfg or {}))
    if server is None:
        return None
    split = split_of(out_dir, task.dataset_name)
    folder = os.path.join(os.path.dirname(os.path.normpath(out_dir)), FOLDER)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{task.dataset_name}_{split}.json")
    if server == "vizwiz":
        image_of = {rec["question_id"]: os.path.basename(str(rec["image"]))
                    for rec in getattr(dataset, "annotation", [])}
        write_json_atomic(path, vizwiz_results(records, image_of))
        logger.info("%s/%s: %d answers for the VizWiz-VQA evaluation server in %s",
                    task.dataset_name, split, len(records), path)
        return path
    part = aokvqa_results(records, field)
    write_json_atomic(path, part)
    both = os.path.join(folder, f"aokvqa_predictions_{split}.json")
    existing: Mapping[str, Any] = {}
    if os.path.isfile(both):
        try:
            with open(both) as f:
                existing = json.load(f)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {both} to add the {field} predictions: {exc}; "
                            f"remove it and evaluate again.") from None
    merged = merge_aokvqa(existing, part, field)
    write_json_atomic(both, merged)
    fields = sorted({k for entry in merged.values() for k in entry})
    logger.info("%s/%s: %d %s predictions for the A-OKVQA leaderboard in %s (with every "
                "setting of this evaluation: %s in %s)", task.dataset_name, split, len(part),
                field, path, ", ".join(fields), both)
    return path

"""Binary classification evaluation datasets: Hateful Memes and VSR.

Both read their official JSON lines as downloaded and give the `classification` task the
same sample keys, so one task ranks both (formats: `READERS`)."""
from __future__ import annotations

from typing import Any

from lavis_ib.common.errors import ConfigError, DataError
from lavis_ib.datasets.datasets.annotations import load_jsonl, media_field, need
from lavis_ib.datasets.datasets.base import BaseDataset


def read_hateful_memes(paths: list[str]) -> list[dict[str, Any]]:
    """`ann_format: hateful_memes`, official JSON lines ``{"id", "img": "img/<id>.png",
    "label", "text"}`` (label absent in unlabelled test files: those cannot be evaluated
    and are rejected)."""
    return [{"instance_id": need(r, "id", p), "image": media_field(r, "img", p, n),
             "text": need(r, "text", p), "label": need(r, "label", p)}
            for p in paths for n, r in enumerate(load_jsonl(p))]


def read_vsr(paths: list[str]) -> list[dict[str, Any]]:
    """`ann_format: vsr`, official JSON lines ``{"image": "<COCO file name>", "caption",
    "label", "relation", ...}``; instance_id = ``<line number>`` of the file (stable for a
    given file)."""
    rows = []
    for p in paths:
        for n, r in enumerate(load_jsonl(p)):
            rows.append({"instance_id": n if len(paths) == 1 else f"{p}:{n}", "image": media_field(r, "image", p, n),
                         "text": need(r, "caption", p), "label": need(r, "label", p),
                         "relation": r.get("relation")})
    return rows


READERS = {"hateful_memes": read_hateful_memes, "vsr": read_vsr}


class ClassificationEvalDataset(BaseDataset):
    """Evaluation samples: ``image``, ``instance_id``, ``text_input`` (the meme text / the
    VSR statement, raw: the task's prompt quotes it), ``label`` (1 = hateful / true, 0
    otherwise)."""

    @classmethod
    def extra_args(cls) -> dict[str, Any]:
        return {"ann_format": "hateful_memes"}

    def load_annotations(self, ann_paths: list[str]) -> list[dict[str, Any]]:
        fmt = self.options["ann_format"]
        if fmt not in READERS:
            raise ConfigError(f"{type(self).__name__}: unknown ann_format '{fmt}'; known: {', '.join(READERS)}.")
        rows = READERS[fmt](ann_paths)
        for row in rows:
            label = row["label"]
            if isinstance(label, bool) or label in (0, 1, "0", "1", True, False):
                row["label"] = int(label)
            else:
                raise DataError(f"{ann_paths}: record {row['instance_id']} has label {label!r}; "
                                f"expected 0 or 1.")
        return rows

    def build_sample(self, record: dict[str, Any], visual: Any, index: int, epoch: int) -> dict[str, Any]:
        return {"image": visual, "instance_id": record["instance_id"], "text_input": str(record["text"]),
                "label": record["label"]}

"""`lavis-ib data check`: on fixture copies of three datasets it reports every file present
and the samples each split holds (exit 0); with one dataset's files removed it names each
missing file, does not count that dataset, still counts the others, and exits 2. Reference
counts are read from the fixture files here, independently of the dataset classes."""
from __future__ import annotations

import json
import shutil

import pytest
import yaml

from lavis_ib.cli.dispatch import main
from lavis_ib.testing.fixtures import write_fixtures

DATASETS = ("coco_caption", "ok_vqa", "textcaps")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("datacheck")
    fixtures = write_fixtures(str(root), list(DATASETS))
    body = {"model": {"arch": "instructblip", "model_type": "tiny_vicuna"},
            "datasets": fixtures, "run": {"output_dir": str(root / "out")}}
    path = root / "project.yaml"
    path.write_text(yaml.safe_dump(body))
    return root, fixtures, str(path)


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def expected_counts(fixtures):
    """Samples per split as the annotation formats define them: a Karpathy train record is
    one caption, a val/test record one image; a VQA question is one sample; a TextCaps
    train record is one caption and val has one sample per distinct image."""
    coco = {s: len(_load(n["storage"])) for s, n in
            fixtures["coco_caption"]["build_info"]["annotations"].items()}
    okvqa = {s: len(_load(n["storage"][0])["questions"]) for s, n in
             fixtures["ok_vqa"]["build_info"]["annotations"].items()}
    caps = fixtures["textcaps"]["build_info"]["annotations"]
    textcaps = {"train": len(_load(caps["train"]["storage"])["data"]),
                "val": len({r["image_id"] for r in _load(caps["val"]["storage"])["data"]})}
    return {"coco_caption": coco, "ok_vqa": okvqa, "textcaps": textcaps}


def _block(out, name):
    """The lines of dataset `name`'s block in the report."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{name}: "))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("  ")), len(lines))
    return lines[start:end]


def _samples_line(counts):
    return "  samples  " + ", ".join(f"{s}: {n}" for s, n in counts.items())


def test_data_check_complete_then_one_dataset_removed(project, capsys):
    root, fixtures, path = project
    counts = expected_counts(fixtures)

    assert main(["data", "check", path]) == 0
    out = capsys.readouterr().out
    for name in DATASETS:
        block = _block(out, name)
        assert block[0] == f"{name}: complete"
        assert _samples_line(counts[name]) in block
    ocr = fixtures["textcaps"]["build_info"]["ocr"]["val"]["storage"]
    assert f"  present  OCR file (build_info.ocr.val): {ocr}" in _block(out, "textcaps")
    assert out.splitlines()[-1].startswith("summary: 3 dataset(s), 3 complete, 0 with")

    shutil.rmtree(root / "ok_vqa")
    assert main(["data", "check", path]) == 2
    out = capsys.readouterr().out
    block = _block(out, "ok_vqa")
    info = fixtures["ok_vqa"]["build_info"]
    removed = [*info["annotations"]["train"]["storage"], *info["annotations"]["val"]["storage"],
               info["images"]["storage"]]
    for missing in removed:
        assert any(line.startswith("  missing") and f"'{missing}' does not exist" in line
                   and "okvqa.allenai.org" in line for line in block), missing
    assert not any(line.startswith("  present") for line in block)
    assert "  samples  not counted (the dataset is not built while files are missing)" in block
    for name in ("coco_caption", "textcaps"):
        assert _samples_line(counts[name]) in _block(out, name)
    assert out.splitlines()[-1].startswith("summary: 3 dataset(s), 2 complete, 1 with")


def test_data_verb_usage(capsys):
    assert main(["data"]) == 2
    assert "usage: lavis-ib data check PROJECT.yaml" in capsys.readouterr().err

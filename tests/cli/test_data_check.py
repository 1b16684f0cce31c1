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


# -- unreadable media: found by `data check`, counted (and limited) by evaluation ----------

@pytest.fixture
def damaged_okvqa(tmp_path):
    """An OK-VQA fixture whose first val image is corrupt and first train image deleted;
    the questions each file serves are counted from the question files here."""
    fixtures = write_fixtures(str(tmp_path), ["ok_vqa"])
    entry = fixtures["ok_vqa"]
    images = entry["build_info"]["images"]["storage"]
    questions = {split: _load(node["storage"][0])["questions"]
                 for split, node in entry["build_info"]["annotations"].items()}

    def image_file(split, image_id):
        return f"{images}/{split}2014/COCO_{split}2014_{image_id:012d}.jpg"

    corrupt_id = questions["val"][0]["image_id"]
    deleted_id = questions["train"][0]["image_id"]
    corrupt, deleted = image_file("val", corrupt_id), image_file("train", deleted_id)
    with open(corrupt, "wb") as f:
        f.write(b"\xff\xd8 not a jpeg after all")
    import os

    os.remove(deleted)
    body = {"model": {"arch": "instructblip", "model_type": "tiny_vicuna"},
            "datasets": {"ok_vqa": entry}, "run": {"output_dir": str(tmp_path / "out")}}
    path = tmp_path / "project.yaml"
    path.write_text(yaml.safe_dump(body))
    uses = {"val": sum(q["image_id"] == corrupt_id for q in questions["val"]),
            "train": sum(q["image_id"] == deleted_id for q in questions["train"])}
    sizes = {split: len(qs) for split, qs in questions.items()}
    return {"path": str(path), "entry": entry, "corrupt": corrupt, "deleted": deleted,
            "uses": uses, "sizes": sizes}


def test_data_check_finds_missing_images_and_decode_finds_corrupt_ones(damaged_okvqa, capsys,
                                                                        monkeypatch):
    d = damaged_okvqa
    monkeypatch.setenv("LAVIS_IB_NO_PROGRESS", "1")
    # without --decode: the deleted file is missing; the corrupt one exists
    assert main(["data", "check", d["path"]]) == 2
    block = _block(capsys.readouterr().out, "ok_vqa")
    assert block[0] == "ok_vqa: 1 missing media file(s)"
    assert f"  missing  train: {d['deleted']}: missing ({d['uses']['train']} samples)" in block
    assert not any(d["corrupt"] in line for line in block)
    # --decode reads every file: both are named, with the samples they serve
    assert main(["data", "check", d["path"], "--decode"]) == 2
    block = _block(capsys.readouterr().out, "ok_vqa")
    assert block[0] == "ok_vqa: 2 unreadable media file(s)"
    assert f"  unreadable train: {d['deleted']}: missing ({d['uses']['train']} samples)" in block
    bad = [line for line in block if line.startswith(f"  unreadable val: {d['corrupt']}: ")]
    assert len(bad) == 1 and "cannot be decoded" in bad[0], block
    assert bad[0].endswith(f"({d['uses']['val']} samples)")
    media = next(line for line in block if line.startswith("  media"))
    assert f"val: 1 of 3 files unreadable ({d['uses']['val']} samples)" in media


class _IdTask:
    """The evaluation task contract at its smallest: one record per sample."""

    def before_evaluation(self, model, dataset):
        pass

    def valid_step(self, model, samples):
        return [{"id": int(i)} for i in samples["question_id"]]

    def metrics(self, records, dataset):
        return {"scored": float(len(records))}


def _okvqa_val(entry):
    from omegaconf import OmegaConf

    from lavis_ib.common.config import compose_dataset
    from lavis_ib.common.registry import registry

    cfg = OmegaConf.merge(compose_dataset("ok_vqa"), entry, {
        "vis_processor": {"eval": {"name": "blip_image_eval", "image_size": 32}}})
    return registry.get_builder_class("ok_vqa")(cfg).build_datasets()["val"]


def test_evaluation_counts_unreadable_samples_and_stops_above_the_limit(damaged_okvqa, tmp_path,
                                                                         caplog):
    import json
    import logging

    import torch

    from lavis_ib.common.errors import DataError
    from lavis_ib.models import BaseModel
    from lavis_ib.runners.eval_loop import evaluate_split

    d = damaged_okvqa
    val, bad, size = _okvqa_val(d["entry"]), d["uses"]["val"], d["sizes"]["val"]
    kwargs = dict(batch_size=4, num_workers=0, device=torch.device("cpu"))
    # the default limit (1%): one image of the split is more; one line, no metrics written
    with pytest.raises(DataError) as info:
        evaluate_split(BaseModel(), _IdTask(), val, "ok_vqa", "val",
                       out_dir=str(tmp_path / "strict"), **kwargs)
    message = str(info.value)
    assert "\n" not in message and f"ok_vqa/val: {bad} of {size} samples" in message
    assert "run.max_bad_sample_fraction = 0.01" in message
    assert not (tmp_path / "strict" / "metrics.json").exists()
    # a limit that allows it: the count is in metrics.json and in the console line
    caplog.set_level(logging.INFO, logger="lavis_ib")
    metrics = evaluate_split(BaseModel(), _IdTask(), val, "ok_vqa", "val",
                             out_dir=str(tmp_path / "lenient"), max_bad_sample_fraction=0.5,
                             **kwargs)
    written = json.load(open(tmp_path / "lenient" / "metrics.json"))
    assert written["num_unreadable"] == metrics["num_unreadable"] == bad
    assert written["num_samples"] == size - bad == written["scored"]
    text = caplog.text
    assert f"ok_vqa/val: scored {size - bad:.2f} ({size - bad} samples, {bad} unreadable)" in text
    assert d["corrupt"] in text and "cannot be decoded" in text

"""Unreadable media become BadSamples; missing files and misconfigurations are one clear
error; `url` entries are downloaded (through iopath, rank 0 only) only when asked."""
from __future__ import annotations

import os
import shutil

import pytest

from lavis_ib.common import dist_utils
from lavis_ib.common.errors import ConfigError, DataError
from lavis_ib.datasets.datasets.base import BadSample, collate
from lavis_ib.testing.fixtures import write_fixtures
from tests.datasets.conftest import build


@pytest.fixture()
def fresh(tmp_path):
    return write_fixtures(str(tmp_path), ["coco_vqa", "msvd_qa", "scienceqa"]), tmp_path


def test_missing_and_corrupt_images_are_bad_samples_dropped_by_the_collater(fresh):
    overrides, root = fresh
    train = build("coco_vqa", overrides["coco_vqa"])["train"]
    images = overrides["coco_vqa"]["build_info"]["images"]["storage"]
    missing = os.path.join(images, train.annotation[0]["image"])
    corrupt = os.path.join(images, train.annotation[2]["image"])
    os.remove(missing)
    with open(corrupt, "wb") as f:
        f.write(b"\xff\xd8\xff garbage, not a jpeg")
    samples = [train[i] for i in (0, 2, 4, 5)]   # records 0-1, 2-3 and 4-5 share an image
    assert isinstance(samples[0], BadSample) and samples[0].path == missing and samples[0].reason == "missing"
    assert isinstance(samples[1], BadSample) and "cannot be decoded" in samples[1].reason
    batch = train.collater(samples)
    assert batch["_bad_files"] == [missing, corrupt] and batch["_num_requested"] == 4
    assert batch["image"].shape[0] == 2 and len(batch["text_output"]) == 2


def test_truncated_image_is_a_bad_sample(fresh):
    overrides, _ = fresh
    val = build("scienceqa", overrides["scienceqa"])["test"]
    path = os.path.join(overrides["scienceqa"]["build_info"]["images"]["storage"], val.annotation[0]["image"])
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    assert isinstance(val[0], BadSample)


def test_unreadable_video_is_a_bad_sample(fresh):
    overrides, _ = fresh
    test = build("msvd_qa", overrides["msvd_qa"])["test"]
    path = os.path.join(overrides["msvd_qa"]["build_info"]["videos"]["storage"], test.annotation[0]["video"])
    open(path, "wb").write(b"no video here")
    bad = test[0]
    assert isinstance(bad, BadSample) and bad.path == path
    assert not isinstance(test[1], BadSample)
    assert collate([bad, test[1]])["_bad_files"] == [path]


def test_eval_sets_reject_epoch_encoded_indices(fresh):
    overrides, _ = fresh
    val = build("coco_vqa", overrides["coco_vqa"])["val"]
    with pytest.raises(IndexError):
        val[len(val)]


def test_missing_annotation_file_names_it_and_the_source(tmp_path):
    with pytest.raises(DataError) as err:
        build("coco_vqa", {"cache_root": str(tmp_path)})
    message = str(err.value)
    assert os.path.join(str(tmp_path), "coco/annotations/v2_OpenEnded_mscoco_train2014_questions.json") in message
    assert "visualqa.org" in message and "build_info" in message


def test_missing_image_folder_is_an_error(fresh, tmp_path):
    overrides, _ = fresh
    with pytest.raises(DataError, match="images folder"):
        build("coco_vqa", {**overrides["coco_vqa"], "build_info": {**overrides["coco_vqa"]["build_info"],
                                                                    "images": {"storage": str(tmp_path / "nope")}}})


def test_training_split_of_an_evaluation_only_dataset_is_a_config_error(tmp_path):
    memes = write_fixtures(str(tmp_path), ["hateful_memes"])["hateful_memes"]["build_info"]
    with pytest.raises(ConfigError, match="evaluation-only"):
        build("hateful_memes", {"build_info": {**memes, "annotations": {"train": memes["annotations"]["val"]}}},
              only_splits=True)


def test_unknown_format_and_fixture_names_are_config_errors(fresh):
    from lavis_ib.datasets.datasets.vqa import VQADataset

    overrides, root = fresh
    with pytest.raises(ConfigError, match="Did you mean 'vqav2'"):
        VQADataset(ann_paths=overrides["coco_vqa"]["build_info"]["annotations"]["train"]["storage"],
                   ann_format="vqa2")
    with pytest.raises(ConfigError, match="Did you mean 'hateful_memes'"):
        write_fixtures(str(root), ["hatefull_memes"])


def test_urls_are_downloaded_only_when_asked_and_only_on_rank_0(fresh, tmp_path, monkeypatch):
    overrides, _ = fresh
    source = overrides["coco_vqa"]["build_info"]["annotations"]
    target = tmp_path / "dl"
    cfg = {**overrides["coco_vqa"], "build_info": {**overrides["coco_vqa"]["build_info"], "annotations": {
        split: {"url": node["storage"], "storage": [str(target / split / os.path.basename(p)) for p in node["storage"]]}
        for split, node in source.items()}}}
    with pytest.raises(DataError, match="set download: true to fetch it from"):
        build("coco_vqa", cfg)
    monkeypatch.setattr(dist_utils, "is_main_process", lambda: False)
    with pytest.raises(DataError):   # another rank waits for rank 0 and never downloads itself
        build("coco_vqa", {**cfg, "download": True})
    assert not target.exists()
    monkeypatch.setattr(dist_utils, "is_main_process", lambda: True)
    datasets = build("coco_vqa", {**cfg, "download": True})
    assert len(datasets["train"]) == 6 and len(os.listdir(target / "train")) == 2


def test_relative_storage_paths_use_cache_root(fresh, tmp_path):
    overrides, root = fresh
    cache = tmp_path / "cache"
    shutil.copytree(os.path.dirname(overrides["coco_vqa"]["build_info"]["images"]["storage"]), cache / "coco_vqa")
    info = overrides["coco_vqa"]["build_info"]
    rel = lambda p: os.path.relpath(p, str(root))
    cfg = {"cache_root": str(cache), "build_info": {
        "annotations": {s: {"storage": [rel(p) for p in n["storage"]]} for s, n in info["annotations"].items()},
        "images": {"storage": rel(info["images"]["storage"])}}}
    assert len(build("coco_vqa", cfg)["val"]) == 6


def test_url_without_storage_is_stored_under_cache_root(fresh, tmp_path):
    overrides, _ = fresh
    info = overrides["coco_vqa"]["build_info"]
    cache = tmp_path / "cache"
    cfg = {"download": True, "cache_root": str(cache), "build_info": {**info, "annotations": {
        "val": {"url": info["annotations"]["val"]["storage"]}}}}
    datasets = build("coco_vqa", cfg, only_splits=True)
    assert len(datasets["val"]) == 6
    assert sorted(os.listdir(cache)) == sorted(os.path.basename(p) for p in info["annotations"]["val"]["storage"])


def test_fixture_command_line(tmp_path, capsys):
    import json

    from lavis_ib.cli.fixtures import main

    assert main([str(tmp_path), "gqa"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert os.path.isfile(out["gqa"]["build_info"]["annotations"]["test"]["storage"])


def test_training_split_without_its_processors_is_a_config_error(fresh):
    from omegaconf import OmegaConf

    from lavis_ib.common.registry import registry
    from tests.datasets.conftest import dataset_config

    overrides, _ = fresh
    for group, expected in (("text_processor", "text_processor.train"), ("vis_processor", "vis_processor.train")):
        cfg = dataset_config("coco_vqa", overrides["coco_vqa"])
        node = OmegaConf.to_container(cfg[group])
        node.pop("train")
        cfg[group] = node
        with pytest.raises(ConfigError, match=expected):
            registry.get_builder_class("coco_vqa")(cfg).build_datasets()


def test_scienceqa_default_config_can_add_a_train_split(fresh):
    overrides, _ = fresh
    info = overrides["scienceqa"]["build_info"]
    sets = build("scienceqa", {"build_info": {**info, "annotations": {"train": info["annotations"]["test"],
                                                                      "test": info["annotations"]["test"]}}})
    assert sets["train"][0]["image"].shape == (3, 32, 32)

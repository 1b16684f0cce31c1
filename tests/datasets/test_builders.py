"""Every builder builds from its fixture and yields well-formed samples for every split."""
from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import IterableDataset

from lavis_ib.common.registry import registry
from lavis_ib.datasets.datasets.base import BadSample
from tests.datasets.conftest import SMALL, build

TRAIN_KEYS = {"image", "text_input", "text_output"}
CAPTION = {"image", "image_id", "instance_id", "references"}
VQA = {"image", "question_id", "question", "text_input", "answers"}
MC = {"image", "question_id", "question", "text_input", "choices", "correct_choice_idx", "answers"}
CLS = {"image", "instance_id", "text_input", "label"}
# eval keys per dataset (dataset contract: docs/architecture.md); None: no eval split
EVAL_KEYS = {
    "coco_caption": CAPTION, "nocaps": CAPTION, "flickr30k": CAPTION, "textcaps": CAPTION | {"ocr_tokens"},
    "capfilt14m": None, "coco_vqa": VQA, "ok_vqa": VQA, "aok_vqa": VQA | {"choices", "correct_choice_idx", "difficult_direct_answer"},
    "ocr_vqa": VQA | {"ocr_tokens"}, "gqa": VQA, "textvqa": VQA | {"ocr_tokens"}, "vizwiz_vqa": VQA,
    "coco_vqg": None, "ok_vqg": None, "aok_vqg": None,
    "llava_conversation": None, "llava_detail": None, "llava_reasoning": None,
    "scienceqa": MC | {"context"}, "iconqa": MC, "hateful_memes": CLS, "vsr": CLS,
    "visdial": {"image", "instance_id", "question", "history", "candidates", "label"},
    "msvd_qa": VQA, "msrvtt_qa": VQA, "ivqa": VQA,
}
TASKS = {"captioning", "vqa", "gqa", "multiple_choice", "classification", "dialog", "video_qa"}
VIDEO = {"msvd_qa", "msrvtt_qa", "ivqa"}


def test_all_26_builders_are_registered():
    assert set(registry.list_datasets()) >= set(EVAL_KEYS)
    assert len(EVAL_KEYS) == 26


def samples_of(dataset):
    if isinstance(dataset, IterableDataset):
        return list(dataset)
    return [dataset[i] for i in range(len(dataset))]


def check_sample(name, split, sample):
    assert not isinstance(sample, BadSample), sample
    expected = TRAIN_KEYS if split == "train" else EVAL_KEYS[name]
    assert set(sample) == expected, (name, split, set(sample) ^ expected)
    image = sample["image"]
    assert image.dtype == torch.float32
    assert image.shape == ((3, 4, SMALL, SMALL) if name in VIDEO else (3, SMALL, SMALL))
    if split == "train":
        assert isinstance(sample["text_input"], str) and sample["text_input"].strip()
        assert isinstance(sample["text_output"], str) and sample["text_output"].strip()
        return
    id_key = "question_id" if "question_id" in sample else "instance_id"
    json.dumps(sample[id_key])  # JSON-serialisable
    if "answers" in sample:
        assert isinstance(sample["answers"], list) and all(isinstance(a, str) for a in sample["answers"])
    if "choices" in sample:
        assert 0 <= sample["correct_choice_idx"] < len(sample["choices"])
    if "candidates" in sample:
        assert 0 <= sample["label"] < len(sample["candidates"])
    if "label" in sample and "candidates" not in sample:
        assert sample["label"] in (0, 1)
    if "references" in sample:
        assert sample["references"] and all(isinstance(r, str) for r in sample["references"])


@pytest.mark.parametrize("name", sorted(EVAL_KEYS))
def test_builder_builds_from_fixture(name, fixture_overrides):
    datasets = build(name, fixture_overrides[name])
    assert datasets
    cfg = registry.get_builder_class(name)().config
    assert cfg.task in TASKS and cfg.sample_ratio == 1.0
    for split, dataset in datasets.items():
        if EVAL_KEYS[name] is None:
            assert split == "train"
        samples = samples_of(dataset)
        assert samples, (name, split)
        for sample in samples:
            check_sample(name, split, sample)
        ids = [s.get("question_id", s.get("instance_id")) for s in samples]
        if split != "train":
            assert len(set(map(str, ids))) == len(ids), f"{name}/{split}: ids not unique"
        batch = dataset.collater(samples[:3])
        assert batch["image"].shape[0] == min(3, len(samples))
        assert batch["_bad_files"] == [] and batch["_num_requested"] == min(3, len(samples))


@pytest.mark.parametrize("name", sorted(VIDEO))
def test_video_eval_sets_expose_the_train_answer_vocabulary(name, fixture_overrides):
    datasets = build(name, fixture_overrides[name])
    vocab = datasets["test"].answer_list
    assert vocab and len(set(vocab)) == len(vocab)
    train_answers = {a for i in range(len(datasets["train"])) for a in datasets["train"].annotation[i]["answers"]}
    assert set(vocab) == train_answers


def test_vqa_eval_keeps_every_human_answer(fixture_overrides):
    val = build("coco_vqa", fixture_overrides["coco_vqa"])["val"]
    assert all(len(val[i]["answers"]) == 10 for i in range(len(val)))


def test_unlabelled_test_split_has_empty_answers(fixture_overrides):
    test = build("vizwiz_vqa", fixture_overrides["vizwiz_vqa"])["test"]
    assert [test[i]["answers"] for i in range(len(test))] == [[], []]


def test_scienceqa_keeps_only_image_problems_of_the_split(fixture_overrides):
    test = build("scienceqa", fixture_overrides["scienceqa"])["test"]
    assert sorted(r["question_id"] for r in test.annotation) == ["11", "12"]  # 10 is val, 13 has no image


def test_iconqa_keeps_only_text_choice_problems(fixture_overrides):
    test = build("iconqa", fixture_overrides["iconqa"])["test"]
    assert sorted(r["question_id"] for r in test.annotation) == ["200", "201", "203"]


def test_visdial_rounds_carry_growing_history(fixture_overrides):
    val = build("visdial", fixture_overrides["visdial"])["val"]
    first, second = val[0], val[1]
    assert first["instance_id"].endswith("_1") and second["instance_id"].endswith("_2")
    assert second["history"].startswith(first["history"] + ". ")
    assert len(first["candidates"]) == 100


def test_scienceqa_train_split_for_finetuning(fixture_overrides):
    info = fixture_overrides["scienceqa"]["build_info"]
    path = info["annotations"]["test"]["storage"]
    sets = build("scienceqa", {"build_info": {**info, "annotations": {"train": {"storage": path},
                                                                      "val": {"storage": path}}}}, only_splits=True)
    train = sets["train"]
    assert sorted(r["question_id"] for r in train.annotation) == ["14", "15"]
    sample = train[1]   # problem 15: choices dog, fish, frog; answer 1
    assert sample["text_input"] == ("Context: Look at the picture. Question: Which is a mammal? "
                                    "Options: (a) dog (b) fish (c) frog. Answer:")
    assert sample["text_output"] == "fish"
    assert set(sets["val"][0]) == EVAL_KEYS["scienceqa"]


def test_demo_project_builds_from_the_fixture_layout(fixture_root, monkeypatch):
    """demo_tiny.yaml points cache_root at a write_fixtures() folder: keep the layout."""
    from lavis_ib.common.config import Config
    from lavis_ib.common.paths import package_path

    path = package_path("configs/projects/instructblip/demo_tiny.yaml")
    monkeypatch.setenv("LAVIS_IB_DEMO_DATA", fixture_root.path)
    cfg = Config(path)
    for name, entry in cfg.datasets_cfg.items():
        for split, dataset in registry.get_builder_class(name)(entry).build_datasets().items():
            assert len(dataset) > 0 and not isinstance(dataset[0], BadSample), (name, split)

"""Readers against hand-typed records of each official (or LAVIS) annotation format in
tests/assets, so they are not tested only against our own fixture writer.

Each case lists the image/video files the records must resolve to (the official naming
conventions); the test writes synthetic media there and checks that every sample loads
and carries the values typed in the asset.
"""
from __future__ import annotations

import io
import os
import tarfile

import numpy as np
import pytest

from lavis_ib.datasets.datasets.base import BadSample
from lavis_ib.testing.fixtures import write_image, write_video
from tests.datasets.conftest import build

ASSETS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets")
VQA2 = ["vqav2/v2_OpenEnded_mscoco_val2014_questions.json", "vqav2/v2_mscoco_val2014_annotations.json"]
VQA2_IMAGES = ["val2014/COCO_val2014_000000262148.jpg", "val2014/COCO_val2014_000000393225.jpg"]
AOK_IMAGES = ["val2017/000000461751.jpg", "val2017/000000081922.jpg"]

# name: (annotations {split: files}, media files relative to vis_root, extra build_info)
CASES = {
    "coco_caption": ({"train": ["coco_caption/coco_karpathy_train.json"], "val": ["coco_caption/coco_karpathy_val.json"]},
                     ["val2014/COCO_val2014_000000522418.jpg", "val2014/COCO_val2014_000000184613.jpg",
                      "val2014/COCO_val2014_000000391895.jpg", "val2014/COCO_val2014_000000060623.jpg"], {}),
    "nocaps": ({"val": ["nocaps/nocaps_val_4500_captions.json"]}, ["0013ea2087020901.jpg", "002cb4a05c3a11e0.jpg"], {}),
    "flickr30k": ({"test": ["flickr30k/flickr30k_test.json"]},
                  ["flickr30k-images/1007129816.jpg", "flickr30k-images/1009434119.jpg"], {}),
    "textcaps": ({"train": ["textcaps/TextCaps_0.1_val.json"], "val": ["textcaps/TextCaps_0.1_val.json"]},
                 ["003a8ae2ef43b901.jpg"], {"ocr": {s: {"storage": "textcaps/TextVQA_Rosetta_OCR_v0.2_val.json"}
                                                    for s in ("train", "val")}}),
    "coco_vqa": ({"train": VQA2, "val": VQA2}, VQA2_IMAGES, {}),
    "ok_vqa": ({"train": VQA2, "val": VQA2}, VQA2_IMAGES, {}),
    "coco_vqg": ({"train": VQA2}, VQA2_IMAGES, {}),
    "ok_vqg": ({"train": VQA2}, VQA2_IMAGES, {}),
    "aok_vqa": ({"train": ["aokvqa/aokvqa_v1p0_val.json"], "val": ["aokvqa/aokvqa_v1p0_val.json"]}, AOK_IMAGES, {}),
    "aok_vqg": ({"train": ["aokvqa/aokvqa_v1p0_val.json"]}, AOK_IMAGES, {}),
    "ocr_vqa": ({"train": ["ocrvqa/dataset.json"], "val": ["ocrvqa/dataset.json"]},
                ["000100039X.jpg", "0001055178.png"],
                {"ocr": {s: {"storage": "ocrvqa/ocr_tokens.json"} for s in ("train", "val")}}),
    "gqa": ({"test": ["gqa/testdev_balanced_questions.json"]}, ["n288870.jpg", "n15740.jpg"], {}),
    "textvqa": ({"val": ["textvqa/TextVQA_0.5.1_val.json"]}, ["0054c91397f2fe05.jpg", "005635e119b9f32f.jpg"],
                {"ocr": {"val": {"storage": "textvqa/TextVQA_Rosetta_OCR_v0.2_val.json"}}}),
    "vizwiz_vqa": ({"val": ["vizwiz/val.json"]}, ["VizWiz_val_00000000.jpg", "VizWiz_val_00000001.jpg"], {}),
    "llava_conversation": ({"train": ["llava/conversation_58k.json"]}, ["000000215677.jpg", "000000142956.jpg"], {}),
    "llava_detail": ({"train": ["llava/conversation_58k.json"]}, ["000000215677.jpg", "000000142956.jpg"], {}),
    "llava_reasoning": ({"train": ["llava/conversation_58k.json"]}, ["000000215677.jpg", "000000142956.jpg"], {}),
    "scienceqa": ({"test": ["scienceqa/problems.json"]}, ["test/6/image.png"], {}),
    "iconqa": ({"test": ["iconqa/problems.json", "iconqa/pid_splits.json"]}, ["test/choose_txt/42/image.png"], {}),
    "hateful_memes": ({"val": ["hateful_memes/dev_seen.jsonl"]}, ["img/08291.png", "img/46971.png"], {}),
    "vsr": ({"test": ["vsr/test.jsonl"]}, ["000000085637.jpg", "000000081770.jpg"], {}),
    "visdial": ({"val": ["visdial/visdial_1.0_val.json"]}, ["VisualDialog_val2018_000000185565.jpg"], {}),
    "msrvtt_qa": ({"train": ["msrvtt_qa/train_qa.json"], "test": ["msrvtt_qa/train_qa.json"]},
                  ["video0.mp4", "video1.mp4"], {"answer_list": None}),  # vocabulary from train
    "msvd_qa": ({"test": ["msvd_qa/qa_test.json"]}, ["-4wsuPCjDBc_5_15.avi", "-7KMZQEsJW4_205_208.avi"],
                {"answer_list": {"storage": "msvd_qa/train_ans2label.json"}}),
    "ivqa": ({"test": ["ivqa/test.csv"]}, ["-2c2pqyXkH8_25_35.mp4", "0CAlt3mFzfQ_60_70.mp4"],
             {"answer_list": {"storage": "ivqa/test.csv"}}),  # a csv vocabulary (train.csv in real use)
}
# how many samples each split must give (the asset's records, by the format's rules)
COUNTS = {
    ("coco_caption", "train"): 3, ("coco_caption", "val"): 2, ("nocaps", "val"): 2, ("flickr30k", "test"): 2,
    ("textcaps", "train"): 2, ("textcaps", "val"): 1, ("coco_vqa", "train"): 3, ("coco_vqa", "val"): 3,
    ("aok_vqa", "val"): 2, ("ocr_vqa", "train"): 4, ("ocr_vqa", "val"): 2, ("gqa", "test"): 2,
    ("textvqa", "val"): 2, ("vizwiz_vqa", "val"): 2, ("llava_conversation", "train"): 4, ("scienceqa", "test"): 1,
    ("iconqa", "test"): 1, ("hateful_memes", "val"): 2, ("vsr", "test"): 2, ("visdial", "val"): 3,
    ("msrvtt_qa", "test"): 3, ("msvd_qa", "test"): 2, ("ivqa", "test"): 2,
}


def asset_overrides(name, root):
    annotations, media, extra = CASES[name]
    rng = np.random.default_rng(0)
    for rel in media:
        path = os.path.join(root, rel)
        write_video(path, rng) if name in ("msrvtt_qa", "msvd_qa", "ivqa") else write_image(path, rng)
    key = "videos" if name in ("msrvtt_qa", "msvd_qa", "ivqa") else "images"
    info = {"annotations": {s: {"storage": [os.path.join(ASSETS, f) for f in files]}
                            for s, files in annotations.items()}, key: {"storage": root}}
    for k, node in extra.items():
        if node is None:
            info[k] = None
        elif "storage" in node:
            info[k] = {"storage": os.path.join(ASSETS, node["storage"])}
        else:
            info[k] = {s: {"storage": os.path.join(ASSETS, v["storage"])} for s, v in node.items()}
    return {"build_info": info}


@pytest.fixture(scope="module")
def asset_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    return {name: build(name, asset_overrides(name, str(root / name)), only_splits=True) for name in CASES}


@pytest.mark.parametrize("name", sorted(CASES))
def test_builder_reads_hand_typed_records(name, asset_sets):
    for split, dataset in asset_sets[name].items():
        samples = [dataset[i] for i in range(len(dataset))]
        bad = [s for s in samples if isinstance(s, BadSample)]
        assert not bad, f"{name}/{split}: records resolve to the wrong media files: {bad}"
        if (name, split) in COUNTS:
            assert len(samples) == COUNTS[(name, split)], (name, split, len(samples))
        assert all("image" in s for s in samples)


def test_official_values_reach_the_samples(asset_sets):
    vqa = asset_sets["coco_vqa"]["val"]
    first = vqa[0]
    assert first["question_id"] == 262148000 and first["question"] == "Where is he looking?"
    assert first["answers"].count("down") == 7 and len(first["answers"]) == 10
    aok = asset_sets["aok_vqa"]["val"][0]
    assert aok["choices"][aok["correct_choice_idx"]] == "cigarette" and aok["answers"][0] == "cigarette"
    nocaps = asset_sets["nocaps"]["val"][1]
    assert nocaps["image_id"] == 1 and nocaps["references"][0].startswith("A red car")
    coco = asset_sets["coco_caption"]["val"][0]
    assert coco["image_id"] == 391895 and len(coco["references"]) == 5
    textvqa = asset_sets["textvqa"]["val"][0]
    assert textvqa["ocr_tokens"] == ["MIA", "NOKIA"] and textvqa["question_id"] == 34602
    ocr_train = asset_sets["ocr_vqa"]["train"]
    assert {ocr_train[i]["text_input"].split(". ")[0] for i in range(len(ocr_train))} == \
        {"OCR tokens: THE, PROPHET, KAHLIL, GIBRAN"}
    sci = asset_sets["scienceqa"]["test"][0]
    assert sci["question_id"] == "6" and sci["context"].startswith("Sugar gliders") and sci["correct_choice_idx"] == 0
    icon = asset_sets["iconqa"]["test"][0]
    assert icon["question_id"] == "42" and icon["choices"][0] == "o'clock"
    memes = asset_sets["hateful_memes"]["val"]
    assert [memes[i]["label"] for i in range(2)] == [1, 0] and memes[0]["instance_id"] == 8291
    vsr = asset_sets["vsr"]["test"][1]
    assert vsr["text_input"] == "The bed is touching the teddy bear." and vsr["label"] == 1
    dial = asset_sets["visdial"]["val"]
    assert dial[1]["history"] == "a man and a woman standing next to a bus. is the photo in color? yes"
    assert dial[1]["question"] == "how many people are there?"
    assert dial[1]["candidates"][dial[1]["label"]] == "2" and dial[0]["candidates"][dial[0]["label"]] == "yes"
    ivqa = asset_sets["ivqa"]["test"][0]
    assert ivqa["question_id"] == "-2c2pqyXkH8_25_35" and ivqa["answers"] == ["fish", "fish", "trout", "fish", "salmon"]
    assert asset_sets["ivqa"]["test"].answer_list == ["fish", "trout", "salmon", "guitar", "ukulele"]
    assert asset_sets["msvd_qa"]["test"].answer_list == ["play", "woman", "man", "cut"]
    assert asset_sets["msrvtt_qa"]["test"].answer_list == ["clip", "man", "cartoon"]
    gqa = asset_sets["gqa"]["test"][0]
    assert gqa["question_id"] == "20968379" and gqa["answers"] == ["metal"]
    viz = asset_sets["vizwiz_vqa"]["val"][1]
    assert viz["question_id"] == "VizWiz_val_00000001" and viz["answers"].count("night time") == 9


def test_llava_turns_from_the_official_conversation(asset_sets):
    llava = asset_sets["llava_conversation"]["train"]
    samples = [llava[i] for i in range(len(llava))]
    assert [s["text_output"] for s in samples][:3] == [
        'The man is performing a skateboarding trick called a "kickflip".',
        "No, the man does not appear to be wearing a helmet or pads.",
        "It reduces the risk of injury during falls."]
    assert samples[0]["text_input"] == "What skateboarding trick is the man performing?"
    assert samples[2]["text_input"].splitlines() == [
        'USER: What skateboarding trick is the man performing? ASSISTANT: The man is performing a '
        'skateboarding trick called a "kickflip".',
        "USER: Is the man wearing protective gear? ASSISTANT: No, the man does not appear to be wearing "
        "a helmet or pads.",
        "Why is protective gear important?"]
    assert samples[3]["text_input"] == "What color is the bus?"  # <image> after the text is removed too


def test_webdataset_reads_a_tar_packed_with_tarfile(tmp_path):
    """Shard made with Python's tarfile from hand-typed members (not with our writer)."""
    from PIL import Image

    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as tar:
        for key in ("000000", "000001", "000002"):
            for ext in ("txt", "json"):
                src = os.path.join(ASSETS, "capfilt", f"{key}.{ext}")
                if os.path.exists(src):
                    tar.add(src, arcname=f"{key}.{ext}")
            buf = io.BytesIO()
            Image.new("RGB", (20, 20), (200, 10, 10)).save(buf, "JPEG")
            info = tarfile.TarInfo(f"{key}.jpg")
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))
    ds = build("capfilt14m", {"build_info": {"annotations": {"train": {"storage": str(shard)}}}, "num_samples": 3})
    outputs = sorted(s["text_output"] for s in ds["train"])
    assert outputs == ["a bus parked near a tree", "a dog running on the beach", "two cats sleeping on a red sofa"]

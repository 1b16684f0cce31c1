"""The training-text formats of Figure 4's arms (`instruction_template`'s `format`): each
arm gives exactly the input and output the paper describes (Sec. 3.4, arXiv v2) on a few
held-in datasets, read through their builders from annotation files written here (the
expected strings are written out by hand, not produced by the code under test)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lavis_ib.common.errors import ConfigError
from lavis_ib.processors.templates import (CAPTION_TEMPLATES, FORMATS, QG_TEMPLATES,
                                           InstructionTemplateProcessor, identifier)
from lavis_ib.testing.fixtures import write_image
from tests.datasets.conftest import build


def _dump(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One training record per dataset, in each dataset's official format."""
    root = tmp_path_factory.mktemp("formats")
    rng = np.random.default_rng(0)
    out = {}
    # COCO Caption, LAVIS list format
    write_image(str(root / "coco" / "img1.jpg"), rng)
    out["coco_caption"] = {"build_info": {
        "annotations": {"train": {"storage": _dump(root / "coco" / "train.json", [
            {"image": "img1.jpg", "caption": "A man riding a wave on top of a surfboard."}])}},
        "images": {"storage": str(root / "coco")}}}
    # OK-VQA, official questions + annotations files
    write_image(str(root / "okvqa" / "train2014" / "COCO_train2014_000000000001.jpg"), rng)
    questions = _dump(root / "okvqa" / "q.json", {"data_subtype": "train2014", "questions": [
        {"image_id": 1, "question": "What sport can you use this for?", "question_id": 11}]})
    answers = _dump(root / "okvqa" / "a.json", {"annotations": [
        {"question_id": 11, "answers": [{"answer": "race"}] * 10}]})
    out["ok_vqa"] = {"build_info": {"annotations": {"train": {"storage": [questions, answers]}},
                                    "images": {"storage": str(root / "okvqa")}}}
    # A-OKVQA question generation, official format
    write_image(str(root / "aokvqa" / "train2017" / "000000000007.jpg"), rng)
    out["aok_vqg"] = {"build_info": {
        "annotations": {"train": {"storage": _dump(root / "aokvqa" / "train.json", [
            {"question_id": "22MexNkBPpdZGX6sxbxVBH", "split": "train", "image_id": 7,
             "question": "What is the man by the bags awaiting?",
             "choices": ["skateboarder", "train", "delivery", "cab"], "correct_choice_idx": 3,
             "direct_answers": ["cab"] * 10, "difficult_direct_answer": False}])}},
        "images": {"storage": str(root / "aokvqa")}}}
    # TextCaps, official captions + Rosetta OCR tokens
    write_image(str(root / "textcaps" / "0054c91397f2fe05.jpg"), rng)
    out["textcaps"] = {"build_info": {
        "annotations": {"train": {"storage": _dump(root / "textcaps" / "train.json", {"data": [
            {"image_id": "0054c91397f2fe05", "caption_str": "A stop sign on a street."}]})}},
        "ocr": {"train": {"storage": _dump(root / "textcaps" / "ocr.json", {"data": [
            {"image_id": "0054c91397f2fe05", "ocr_tokens": ["STOP", "sign"]}]})}},
        "images": {"storage": str(root / "textcaps")}}}
    return out


def sample(files, name, fmt):
    """The first training sample of `name` with its train text processor in format `fmt`."""
    entry = {**files[name], "text_processor": {"train": {"format": fmt}}}
    return build(name, entry, only_splits=True)["train"][0]


# (dataset, format, text_input, text_output): the paper's arms, written out
EXPECTED = [
    # vanilla multitask: the plain input, captioning from the image alone
    ("coco_caption", "plain", "", "a man riding a wave on top of a surfboard"),
    ("ok_vqa", "plain", "what sport can you use this for?", "race"),
    ("aok_vqg", "plain", "cab", "What is the man by the bags awaiting?"),
    # TextCaps keeps its OCR tokens, which are data, not instruction (FlanT5's tokenizer
    # drops the trailing space)
    ("textcaps", "plain", "OCR tokens: STOP, sign. ", "a stop sign on a street"),
    # dataset-prefixed multitask: [Task:Dataset] before the plain input
    ("coco_caption", "dataset_prefix", "[Image captioning:COCO Caption]",
     "a man riding a wave on top of a surfboard"),
    ("ok_vqa", "dataset_prefix", "[Visual question answering:OKVQA] what sport can you use this for?",
     "race"),
    ("aok_vqg", "dataset_prefix", "[Visual question generation:A-OKVQA] cab",
     "What is the man by the bags awaiting?"),
    ("textcaps", "dataset_prefix", "OCR tokens: STOP, sign. [Image captioning:TextCaps]",
     "a stop sign on a street"),
]


@pytest.mark.parametrize("name,fmt,text_input,text_output", EXPECTED,
                         ids=[f"{n}-{f}" for n, f, _, _ in EXPECTED])
def test_each_arm_gives_the_papers_input_and_output(files, name, fmt, text_input, text_output):
    got = sample(files, name, fmt)
    assert (got["text_input"], got["text_output"]) == (text_input, text_output)


def test_instruction_tuning_is_the_default_and_unchanged(files):
    """The defaults draw a template (the instruction-tuning arm): the same samples as
    before the format setting existed."""
    caption = sample(files, "coco_caption", "instruction")
    assert caption["text_input"] in CAPTION_TEMPLATES
    qg = build("aok_vqg", files["aok_vqg"], only_splits=True)["train"]
    assert qg.text_processor.text_format == "instruction"
    filled = {t.replace("{answer}", "cab") for t in QG_TEMPLATES}
    assert qg[0]["text_input"] in filled
    vqa = sample(files, "ok_vqa", "instruction")["text_input"]
    assert "what sport can you use this for?" in vqa and not vqa.startswith("[")


def test_the_processor_formats_written_out():
    vqa = dict(family="vqa", task_name="Visual question answering", dataset_name="VQAv2")
    prefix = InstructionTemplateProcessor(format="dataset_prefix", **vqa)
    assert prefix(question="What is THE man holding?") == \
        "[Visual question answering:VQAv2] what is the man holding?"
    assert InstructionTemplateProcessor("vqa", format="plain")(question="Is it (really) RED?") == \
        "is it really red?"
    assert InstructionTemplateProcessor("caption", format="plain")(index=5, epoch=2) == ""
    assert InstructionTemplateProcessor("caption", format="dataset_prefix", task_name="Image captioning",
                                        dataset_name="COCO Caption")() == "[Image captioning:COCO Caption]"
    assert identifier("Visual reasoning") == "[Visual reasoning]"
    assert FORMATS == ("instruction", "plain", "dataset_prefix")


@pytest.mark.parametrize("kwargs,message", [
    (dict(format="plan"), "instruction_template: unknown format 'plan'. Did you mean 'plain'?"),
    (dict(format="dataset_prefix"), "format 'dataset_prefix' needs task_name and dataset_name"),
    (dict(format="dataset_prefix", task_name="Image captioning"), "needs task_name and dataset_name"),
    (dict(format="plain", templates=["Q: {question}"]), "format 'plain' reads no templates"),
])
def test_bad_format_settings_are_one_clear_error(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("?", r"\?").replace("(", r"\(")
                       .replace(")", r"\)").replace("[", r"\[")):
        InstructionTemplateProcessor(**kwargs)


def test_every_held_in_template_dataset_names_its_identifier():
    """format: dataset_prefix works on every held-in dataset that draws templates."""
    from lavis_ib.common.config import compose_dataset
    from lavis_ib.processors import build_processors

    names = {"coco_caption": "[Image captioning:COCO Caption]", "capfilt14m": "[Image captioning:Web CapFilt]",
             "textcaps": "[Image captioning:TextCaps]", "coco_vqa": "[Visual question answering:VQAv2]",
             "ok_vqa": "[Visual question answering:OKVQA]", "aok_vqa": "[Visual question answering:A-OKVQA]",
             "ocr_vqa": "[Visual question answering:OCR-VQA]",
             "coco_vqg": "[Visual question generation:VQAv2]", "ok_vqg": "[Visual question generation:OKVQA]",
             "aok_vqg": "[Visual question generation:A-OKVQA]"}
    for name, tag in names.items():
        entry = compose_dataset(name, {"text_processor": {"train": {"format": "dataset_prefix"}}})
        proc = build_processors(entry.text_processor)["train"]
        assert proc() == tag, name

"""Sample content: template draws, QG inversion, OCR prefixes, LLaVA turns, VQA targets."""
from __future__ import annotations

import collections

import pytest

from lavis_ib.processors.templates import CAPTION_TEMPLATES, QG_TEMPLATES, VQA_TEMPLATES
from lavis_ib.processors.text import normalize_question
from tests.datasets.conftest import build


@pytest.fixture(scope="module")
def sets(fixture_overrides):
    names = ("coco_caption", "coco_vqa", "coco_vqg", "aok_vqa", "textcaps", "ocr_vqa", "textvqa",
             "llava_conversation", "llava_detail", "msvd_qa")
    return {n: build(n, fixture_overrides[n]) for n in names}


@pytest.mark.parametrize("name,family,templates", [
    ("coco_caption", "caption", CAPTION_TEMPLATES), ("coco_vqa", "vqa", VQA_TEMPLATES),
    ("coco_vqg", "qg", QG_TEMPLATES)])
def test_template_draw_covers_every_template_and_follows_seed_epoch_index(sets, name, family, templates):
    train = sets[name]["train"]
    proc = train.text_processor
    assert proc.family == family and proc.templates == templates
    n, seen = len(train), set()
    for i in range(n * 40):        # i >= len encodes the epoch
        epoch, index = divmod(i, n)
        sample = train[i]
        record = train.annotation[index]
        tid = proc.draw(index, epoch)
        seen.add(tid)
        if family == "caption":
            assert sample["text_input"] == templates[tid]
        elif family == "vqa":
            assert sample["text_input"] == proc.format(tid, question=record["question"])
        else:
            assert sample["text_input"] in {proc.format(tid, answer=a) for a in record["answers"]}
    assert seen == set(range(len(templates)))


def test_draws_are_deterministic_and_depend_on_the_seed(sets, fixture_overrides):
    a, b = sets["coco_vqa"]["train"], build("coco_vqa", fixture_overrides["coco_vqa"])["train"]
    pairs = lambda ds: [(ds[i]["text_input"], ds[i]["text_output"]) for i in range(3 * len(ds))]
    assert pairs(a) == pairs(b)
    other = build("coco_vqa", {**fixture_overrides["coco_vqa"],
                               "text_processor": {"train": {"seed": 7}}})["train"]
    assert pairs(other) != pairs(a)


def test_qg_puts_the_answer_in_the_instruction_and_the_question_in_the_target(sets):
    for name in ("coco_vqg",):
        train = sets[name]["train"]
        for i in range(2 * len(train)):
            sample, record = train[i], train.annotation[i % len(train)]
            assert sample["text_output"] == record["question"]
            drawn = [a for a in record["answers"] if normalize_question(a) in sample["text_input"]]
            assert drawn, (sample, record["answers"])
            assert normalize_question(record["question"]) not in sample["text_input"]


def test_ocr_prefix_where_the_paper_says(sets):
    caps = sets["textcaps"]["train"]
    for i in range(len(caps)):
        tokens = caps.annotation[i]["ocr_tokens"]
        assert tokens and caps[i]["text_input"].startswith(f"OCR tokens: {', '.join(tokens)}. ")
    ocr = sets["ocr_vqa"]["train"]
    assert all(ocr[i]["text_input"].startswith("OCR tokens: A, Book, vol") for i in range(len(ocr)))
    assert all(s["ocr_tokens"] for s in (sets["textvqa"]["val"][i] for i in range(3)))
    assert sets["textcaps"]["val"][0]["ocr_tokens"] == ["tok0a", "tok0b"]
    for name in ("coco_vqa", "coco_caption", "coco_vqg"):
        train = sets[name]["train"]
        assert not any("OCR tokens" in train[i]["text_input"] for i in range(len(train)))


def test_ocr_prefix_keeps_the_first_30_tokens(fixture_overrides, tmp_path):
    import json

    ocr_file = tmp_path / "ocr.json"
    asins = json.load(open(fixture_overrides["ocr_vqa"]["build_info"]["annotations"]["train"]["storage"]))
    ocr_file.write_text(json.dumps({a: [f"w{k}" for k in range(40)] for a in asins}))
    ov = {**fixture_overrides["ocr_vqa"]}
    ov["build_info"] = {**ov["build_info"], "ocr": {s: {"storage": str(ocr_file)} for s in ("train", "val", "test")}}
    text = build("ocr_vqa", ov)["train"][0]["text_input"]
    assert text.startswith("OCR tokens: " + ", ".join(f"w{k}" for k in range(30)) + ". ")
    assert "w30" not in text


def test_llava_yields_one_sample_per_assistant_turn(sets):
    conv = sets["llava_conversation"]["train"]
    assert len(conv) == 2 * 3 and len(sets["llava_detail"]["train"]) == 2
    third = conv[2]["text_input"].splitlines()
    assert len(third) == 3 and third[0].startswith("USER: ") and " ASSISTANT: " in third[0]
    assert conv[2]["text_output"].endswith("turn 2.") and "<image>" not in conv[0]["text_input"]


def test_llava_history_is_truncated_from_the_left(fixture_overrides):
    ds = build("llava_conversation", {**fixture_overrides["llava_conversation"], "max_history_chars": 120})["train"]
    lines = ds[2]["text_input"].splitlines()
    assert len(lines) < 3 and lines[-1] == ds.annotation[2]["instruction"].splitlines()[-1]


def test_vqa_batch_keeps_each_target_with_its_question(sets):
    train = sets["coco_vqa"]["train"]
    samples = [train[i] for i in range(len(train))]
    batch = train.collater(samples)
    assert len(set(batch["text_output"])) > 2  # several distinct answers in one batch
    for j, record in enumerate(train.annotation):
        assert normalize_question(record["question"]) in batch["text_input"][j]
        assert batch["text_output"][j] in record["answers"]
        assert batch["text_output"][j] == samples[j]["text_output"]
    assert batch["image"].shape[0] == len(samples) == len(batch["text_output"]) == len(batch["text_input"])


def test_answers_are_drawn_by_frequency(sets):
    train = sets["coco_vqa"]["train"]
    record = train.annotation[0]   # 6 x a, 3 x b, 1 x c
    counts = collections.Counter(train.build_sample(record, None, 0, epoch)["text_output"] for epoch in range(4000))
    expected = collections.Counter(record["answers"])
    for answer, k in expected.items():
        assert abs(counts[answer] / 4000 - k / 10) < 0.03, (answer, counts)


def test_aok_vqa_trains_on_direct_answers(sets):
    train = sets["aok_vqa"]["train"]
    for i in range(len(train)):
        assert train[i]["text_output"] in train.annotation[i]["answers"]
        assert set(train[i]) == {"image", "text_input", "text_output"}


def test_video_train_sample_is_four_frames_with_a_templated_question(sets):
    sample = sets["msvd_qa"]["train"][0]
    assert sample["image"].shape[:2] == (3, 4) and "what is shown" in sample["text_input"]


def test_lavis_text_processors_still_work_untemplated(fixture_overrides):
    from lavis_ib.common.registry import registry
    from tests.datasets.conftest import dataset_config

    def with_text_processor(name, node):
        cfg = dataset_config(name, fixture_overrides[name])
        cfg.text_processor = {"train": node}   # replace: a merge would keep the template keys
        return registry.get_builder_class(name)(cfg).build_datasets()["train"]

    train = with_text_processor("coco_vqa", {"name": "blip_question"})
    assert train[0]["text_input"] == normalize_question(train.annotation[0]["question"])
    caps = with_text_processor("coco_caption", {"name": "blip_caption", "prompt": "a picture of "})
    assert caps[0]["text_input"] == "a picture of "

"""Annotation records of the wrong shape (reliability audit probes B7a, B7f): a media path that
is a number, null, a list or a mapping, and an annotation file that holds `null`, are one
DataError naming the file, the record and the field when the dataset is built, not a
TypeError from deep inside a reader."""
from __future__ import annotations

import json

import pytest

from lavis_ib.common.errors import DataError
from tests.datasets.conftest import build


@pytest.fixture(scope="module")
def fixtures(fixture_root):
    """The session's fixture entries (read only: each test writes its own annotation file)."""
    return fixture_root.overrides


def _build(fixtures, name, tmp_path, document):
    """`name`'s train split over an annotation file holding `document` (written raw)."""
    path = tmp_path / f"{name}_train.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    info = fixtures[name]["build_info"]
    overrides = {**fixtures[name], "build_info": {**info, "annotations": {
        "train": {"storage": str(path)}}}}
    return build(name, overrides, only_splits=True)["train"], str(path)


# (row id, the image value, how the message shows it)
IMAGES = [("int", 5, "int 5"), ("null", None, "null"), ("list", ["a.png"], "list ['a.png']"),
          ("dict", {"a": 1}, "dict {'a': 1}")]


@pytest.mark.parametrize("value,shown", [r[1:] for r in IMAGES], ids=[r[0] for r in IMAGES])
def test_caption_image_of_the_wrong_type_names_file_record_and_field(fixtures, tmp_path, value, shown):
    records = [{"image": "a.jpg", "caption": "fine"}, {"image": value, "caption": "a dog"}]
    with pytest.raises(DataError) as err:
        _build(fixtures, "coco_caption", tmp_path, records)
    path = str(tmp_path / "coco_caption_train.json")
    assert str(err.value) == (f"'{path}' record 1: field 'image' must be a file path (a non-empty "
                              f"string, relative to the media folder); got {shown}.")


def test_vqa_image_of_the_wrong_type_is_the_same_line(fixtures, tmp_path):
    records = [{"question_id": 1, "question": "what?", "image": 7, "direct_answers": ["yes"],
                "choices": ["yes", "no"], "correct_choice_idx": 0}]
    with pytest.raises(DataError, match=r"record 0: field 'image' must be a file path .*; got int 7\.$"):
        _build(fixtures, "aok_vqa", tmp_path, records)


def test_a_record_without_its_image_names_the_record(fixtures, tmp_path):
    with pytest.raises(DataError, match=r"record 0: the field 'image' \(a media file path\) is missing"):
        _build(fixtures, "coco_caption", tmp_path, [{"caption": "no image"}])


@pytest.mark.parametrize("name", ["coco_caption", "aok_vqa"])
def test_a_null_annotation_file_is_one_line(fixtures, tmp_path, name):
    with pytest.raises(DataError) as err:
        _build(fixtures, name, tmp_path, "null\n")
    path = str(tmp_path / f"{name}_train.json")
    assert str(err.value) == (f"annotation file '{path}' holds null, not annotations; write its "
                              f"records (or point build_info.annotations at the right file).")


def test_a_lavis_file_that_is_not_a_list_is_one_line(fixtures, tmp_path):
    with pytest.raises(DataError, match=r"must hold a JSON list of records; got int\.$"):
        _build(fixtures, "coco_caption", tmp_path, "5")


def test_a_valid_file_still_builds(fixtures, tmp_path):
    train, _ = _build(fixtures, "coco_caption", tmp_path, [{"image": "a.jpg", "caption": "a dog"}])
    assert len(train) == 1 and train.annotation[0]["image"] == "a.jpg"

"""Inputs of `lavis-ib predict` (files, folders, globs, JSONL) and its batches; no model."""
from __future__ import annotations

import json

import pytest

from lavis_ib.common.errors import ConfigError, DataError
from lavis_ib.predict.batches import make_batches
from lavis_ib.predict.inputs import (PredictRecord, expand_paths, jsonl_records,
                                     parse_candidates, path_records)


@pytest.fixture()
def tree(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "a.JPG", "c.mp4", "notes.txt", "sub/d.png"):
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def test_folders_globs_and_files(tree, caplog):
    caplog.set_level("INFO")
    assert expand_paths([str(tree)]) == [str(tree / n) for n in ("a.JPG", "b.png", "c.mp4")]
    assert "passed over 1 file(s)" in caplog.text
    assert expand_paths([str(tree)], recursive=True)[-1] == str(tree / "sub" / "d.png")
    assert expand_paths([str(tree / "*.png"), str(tree / "notes.txt")]) == [
        str(tree / "b.png"), str(tree / "notes.txt")]         # a named file is always kept
    assert expand_paths([str(tree / "**" / "*.png")]) == [str(tree / "b.png"),
                                                          str(tree / "sub" / "d.png")]
    records = path_records([str(tree / "*.mp4"), str(tree / "b.png")], None, "Q?", ["x"])
    assert [(r.kind, r.candidates) for r in records] == [("video", ("x",)), ("image", ("x",))]
    assert path_records([str(tree / "c.mp4")], "image", "Q?", None)[0].kind == "image"


def test_missing_paths_are_one_error(tree):
    with pytest.raises(DataError) as err:
        expand_paths([str(tree / "nope.png"), str(tree / "*.gif"), str(tree / "b.png")])
    assert "nope.png' (does not exist)" in str(err.value)
    assert "*.gif' (a pattern that matches no file)" in str(err.value)
    empty = tree / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no image or video file; add --recursive"):
        expand_paths([str(empty)])
    with pytest.raises(ConfigError, match="--prompt is needed"):
        path_records([str(tree / "b.png")], None, None, None)


def test_jsonl_records(tree):
    path = tree / "sub" / "records.jsonl"
    rows = [{"image": "d.png", "prompt": "one"}, {"video": str(tree / "c.mp4")},
            {"image": "../b.png", "candidates": ["a", "b"]}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    records = jsonl_records(str(path), "default", ("y", "n"))
    assert records == [
        PredictRecord(str(tree / "sub" / "d.png"), "image", "one", ("y", "n"), "d.png"),
        PredictRecord(str(tree / "c.mp4"), "video", "default", ("y", "n"), str(tree / "c.mp4")),
        PredictRecord(str(tree / "b.png"), "image", "default", ("a", "b"), "../b.png")]
    assert [r.name for r in records] == ["d.png", str(tree / "c.mp4"), "../b.png"]
    path.write_text(json.dumps({"image": "d.png", "candidates": []}) + "\n")
    with pytest.raises(DataError, match="line 1: 'candidates' must be a non-empty list"):
        jsonl_records(str(path), "default", ("y", "n"))


def test_jsonl_problems_name_their_lines(tree):
    path = tree / "bad.jsonl"
    path.write_text('{"image": "b.png", "prompt": "ok"}\n'
                    '{"image": "b.png", "promt": "x"}\n'
                    '{"image": "b.png"\n'
                    '{"image": "missing.png", "prompt": "x"}\n'
                    '{"image": "b.png", "video": "c.mp4", "prompt": "x"}\n'
                    '{"image": "b.png"}\n'
                    '{"image": "b.png", "prompt": "x", "candidates": ["a", "a"]}\n')
    with pytest.raises(DataError) as err:
        jsonl_records(str(path), None, None)
    msg = str(err.value)
    for expected in ("line 2: unknown key 'promt'. Did you mean 'prompt'?", "line 3: not JSON",
                     "line 4: image 'missing.png' does not exist (read as '",
                     "line 5: give exactly one of 'image' and 'video'", "line 6: no prompt",
                     "line 7: candidates appear twice: 'a'"):
        assert expected in msg, msg
    assert "line 1" not in msg
    with pytest.raises(DataError, match="does not exist"):
        jsonl_records(str(tree / "none.jsonl"), None, None)


def test_candidates_flag(tmp_path):
    assert parse_candidates(" yes, no ,a cat") == ("yes", "no", "a cat")
    listed = tmp_path / "labels.txt"
    listed.write_text("a dog\n\na, cat\n")
    assert parse_candidates(f"@{listed}") == ("a dog", "a, cat")
    with pytest.raises(ConfigError, match="appear twice"):
        parse_candidates("yes,no,yes")
    with pytest.raises(ConfigError, match="at least one"):
        parse_candidates(" , ")
    with pytest.raises(DataError, match="does not exist"):
        parse_candidates(f"@{tmp_path / 'none.txt'}")


def test_batches_split_at_kind_and_mode_changes():
    img, vid = PredictRecord("a", "image", "p"), PredictRecord("v", "video", "p")
    rank = PredictRecord("r", "image", "p", ("x",))
    other = PredictRecord("s", "image", "p", ("y", "z"))
    records = [img, img, img, vid, vid, rank, other, rank, img]
    assert [(b.start, b.stop) for b in make_batches(records, 2)] == [
        (0, 2), (2, 3), (3, 5), (5, 7), (7, 8), (8, 9)]
    assert len(make_batches(records, 100)) == 4

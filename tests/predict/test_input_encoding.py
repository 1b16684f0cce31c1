"""Text files `lavis-ib predict` reads that are not UTF-8 (reliability audit probe D9): a Latin-1
byte in an `--input` JSONL or a `--candidates @FILE` is one DataError line naming the
file, the line and the byte's position, never a UnicodeDecodeError traceback."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from lavis_ib.common.errors import DataError
from lavis_ib.predict.inputs import jsonl_records, parse_candidates


@pytest.fixture()
def image_dir(tmp_path):
    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "a.png")
    return tmp_path


def test_a_latin1_byte_in_the_input_jsonl_names_file_line_and_byte(image_dir):
    path = image_dir / "records.jsonl"
    good = json.dumps({"image": "a.png", "prompt": "ok"}).encode()
    bad = '{"image": "a.png", "prompt": "caf\u00e9"}'.encode("latin-1")   # é as the one byte 0xe9
    path.write_bytes(good + b"\n" + bad + b"\n" + good + b"\n")
    with pytest.raises(DataError) as err:
        jsonl_records(str(path), None, None)
    column = bad.index(b"\xe9") + 1
    assert str(err.value) == (f"--input '{path}': line 2: not UTF-8 text (byte 0xe9 at byte {column} "
                              f"of the line); save the file as UTF-8.")


def test_utf8_with_a_byte_order_mark_is_read(image_dir):
    path = image_dir / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"image": "a.png", "prompt": "caf\u00e9"},
                                                  ensure_ascii=False).encode() + b"\n")
    [record] = jsonl_records(str(path), None, None)
    assert record.prompt == "caf\u00e9" and record.path == str(image_dir / "a.png")


def test_a_latin1_candidates_file_names_file_and_line(tmp_path):
    path = tmp_path / "answers.txt"
    path.write_bytes(b"yes\nno\ncaf\xe9\n")
    with pytest.raises(DataError) as err:
        parse_candidates(f"@{path}")
    assert str(err.value) == (f"--candidates '@{path}': line 3: not UTF-8 text (byte 0xe9 at byte 4 "
                              f"of the line); save the file as UTF-8.")

"""The results file of `lavis-ib predict`: settings sidecar, torn lines, refusals; no model."""
from __future__ import annotations

import json

import pytest

from lavis_ib.common.errors import ConfigError, DataError
from lavis_ib.predict.output import ResultsFile, meta_path

SETTINGS = {"model": "instructblip:tiny_vicuna", "seed": 0, "batch_size": 2}
ROWS = [{"input": f"{i}.png", "prompt": "p", "answer": str(i)} for i in range(3)]


def written(path, rows=ROWS, settings=SETTINGS):
    out = ResultsFile(str(path), settings)
    out.start()
    out.append(rows)
    out.close()
    return path


def test_torn_last_line_is_dropped_and_rewritten(tmp_path, caplog):
    path = written(tmp_path / "r.jsonl")
    text = path.read_text()
    path.write_text(text[:-9])                       # killed in the middle of line 3
    again = ResultsFile(str(path), dict(SETTINGS))
    assert again.existing == ROWS[:2]
    assert "line 3 is torn" in caplog.text
    again.check_inputs([{k: r[k] for k in ("input", "prompt")} for r in ROWS])
    again.keep(2)
    again.start()
    again.append(ROWS[2:])
    again.close()
    assert path.read_text() == text


def test_keep_drops_an_unfinished_batch(tmp_path):
    path = written(tmp_path / "r.jsonl")
    again = ResultsFile(str(path), SETTINGS)
    again.keep(1)
    assert [json.loads(line) for line in path.read_text().splitlines()] == ROWS[:1]


def test_refusals(tmp_path):
    path = written(tmp_path / "r.jsonl")
    with pytest.raises(ConfigError, match=r"other settings \(seed: 0 then, 1 now\).*--overwrite"):
        ResultsFile(str(path), {**SETTINGS, "seed": 1})
    with pytest.raises(ConfigError, match="line 2 is for '1.png'.*input 2 of this run, 'x.png'"):
        ResultsFile(str(path), SETTINGS).check_inputs(
            [{"input": "0.png", "prompt": "p"}, {"input": "x.png", "prompt": "p"}] + [{}] * 2)
    with pytest.raises(ConfigError, match="holds 3 records but this run has 1"):
        ResultsFile(str(path), SETTINGS).check_inputs([{"input": "0.png"}])
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{oops", lines[2]]) + "\n")
    with pytest.raises(DataError, match="line 2 is not a result record"):
        ResultsFile(str(path), SETTINGS)
    fresh = ResultsFile(str(path), {**SETTINGS, "seed": 1}, overwrite=True)
    assert fresh.existing == [] and not path.exists()
    other = tmp_path / "mine.jsonl"
    other.write_text("{}\n")
    with pytest.raises(ConfigError, match="not written by lavis-ib predict"):
        ResultsFile(str(other), SETTINGS)
    with pytest.raises(DataError, match="folder .* does not exist"):
        ResultsFile(str(tmp_path / "no" / "r.jsonl"), SETTINGS)
    meta = meta_path(str(written(tmp_path / "s.jsonl")))
    assert json.loads(open(meta).read()) == {"version": 1, "settings": SETTINGS}

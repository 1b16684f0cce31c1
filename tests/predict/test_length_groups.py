"""`lavis-ib predict` batches inputs of similar prompt length within windows of
consecutive inputs: the results file is the one of consecutive batches (tiny_vicuna,
generation and ranking), the model calls really hold prompts of close length, and a run
stopped inside a window resumes to the same file."""
from __future__ import annotations

import json

import pytest

from lavis_ib.cli.predict import main
from lavis_ib.common.errors import ConfigError
from lavis_ib.predict import batches as predict_batches
from lavis_ib.predict.batches import WINDOW_BATCHES, make_batches, make_windows
from lavis_ib.predict.inputs import PredictRecord
from tests.predict.conftest import write_png

MODEL = ["--model", "instructblip:tiny_vicuna", "--no-progress", "--num-beams", "2",
         "--max-length", "4"]
# short and long prompts alternating, as a mixed collection of requests would come
PROMPTS = ["Why?", "What is the man on the left of the picture holding in his right hand?",
           "Cat?", "Describe the colours, the shapes and the objects you can see in this image.",
           "Red?", "Which animal stands on the grass behind the fence near the house?",
           "Day?", "How many people are crossing the street in front of the bus?"]


def write_inputs(tmp_path, rank: bool) -> str:
    rows = []
    for i, prompt in enumerate(PROMPTS * 2):
        write_png(tmp_path / f"{i}.png", i)
        rows.append({"image": f"{i}.png", "prompt": prompt,
                     **({"candidates": ["a cat", "no", "two dogs"]} if rank else {})})
    path = tmp_path / ("rank.jsonl" if rank else "gen.jsonl")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def predict(inputs, out, *flags) -> str:
    assert main(MODEL + ["--input", inputs, "--output", str(out), *flags]) == 0
    return open(out).read()


@pytest.mark.parametrize("rank", [False, True], ids=["generate", "rank"])
def test_grouped_results_equal_consecutive_batches(tmp_path, rank):
    """(test_predict_run.py checks grouped batches against one input at a time.)"""
    inputs = write_inputs(tmp_path, rank)
    grouped = predict(inputs, tmp_path / "g.jsonl", "--batch-size", "4")
    other = predict(inputs, tmp_path / "c.jsonl", "--batch-size", "4", "--no-length-groups")
    if not rank:
        assert grouped == other
    # a summed log-probability moves in its last float32 bits with the batch's padding (as
    # between any two batch sizes); everything else is identical
    for a, b in zip(grouped.splitlines(), other.splitlines(), strict=True):
        a, b = json.loads(a), json.loads(b)
        if rank:
            assert a.pop("scores") == pytest.approx(b.pop("scores"), rel=1e-5)
        assert a == b
    got = [json.loads(line) for line in grouped.splitlines()]
    assert [r["prompt"] for r in got] == PROMPTS * 2          # input order
    assert all(r["answer"] for r in got)


def test_model_calls_hold_prompts_of_close_length(tmp_path, monkeypatch):
    inputs, calls = write_inputs(tmp_path, rank=False), []
    real = predict_batches.predict_batch

    def recording(model, records, *rest):
        calls.append([len(r.prompt) for r in records])
        return real(model, records, *rest)

    monkeypatch.setattr(predict_batches, "predict_batch", recording)
    spreads = {}
    for flag in ([], ["--no-length-groups"]):
        calls.clear()
        predict(inputs, tmp_path / f"{len(flag)}.jsonl", "--batch-size", "4", *flag)
        assert sorted(len(c) for c in calls) == [4, 4, 4, 4]
        spreads[bool(flag)] = sum(max(c) - min(c) for c in calls)
    assert spreads[False] * 3 < spreads[True], spreads


def test_a_run_stopped_inside_a_window_resumes_to_the_same_file(tmp_path, caplog):
    """Nucleus sampling: the per-batch seeds of grouped batches hold across the restart."""
    caplog.set_level("INFO")
    inputs = write_inputs(tmp_path, rank=False)
    flags = ["--batch-size", "1", "--use-nucleus-sampling", "--seed", "5"]   # windows of 8
    full = predict(inputs, tmp_path / "full.jsonl", *flags)
    cut = tmp_path / "cut.jsonl"
    (tmp_path / "cut.jsonl.meta.json").write_text(
        (tmp_path / "full.jsonl.meta.json").read_text())
    cut.write_text("".join(full.splitlines(keepends=True)[:WINDOW_BATCHES + 3]))
    assert predict(inputs, cut, *flags) == full    # as if killed inside the second window
    assert f"resuming after {WINDOW_BATCHES} of {len(PROMPTS) * 2}" in caplog.text
    with pytest.raises(ConfigError, match=r"length_grouped: True then, None now"):
        predict(inputs, cut, *flags, "--no-length-groups")   # other batches, other draws


def test_windows():
    img, vid = PredictRecord("a", "image", "p"), PredictRecord("v", "video", "long prompt")
    rank = PredictRecord("r", "image", "a longer prompt", ("x",))
    records = [img, vid, rank, img, vid, rank, img] * 5
    plain = make_windows(records, 2, length_grouped=False)
    assert [(w.start, w.stop) for w in plain] == [(b.start, b.stop)
                                                  for b in make_batches(records, 2)]
    assert all(w.batches == (tuple(range(w.start, w.stop)),) for w in plain)
    windows = make_windows(records, 2)
    size = 2 * WINDOW_BATCHES
    assert [(w.start, w.stop) for w in windows] == [
        (k, min(k + size, len(records))) for k in range(0, len(records), size)]
    for w in windows:
        members = [i for b in w.batches for i in b]
        assert sorted(members) == list(range(w.start, w.stop))
        for b in w.batches:
            assert 1 <= len(b) <= 2
            assert len({(records[i].kind, records[i].candidates) for i in b}) == 1
        lengths = [len(records[b[0]].prompt) for b in w.batches if records[b[0]] is img]
        assert lengths == sorted(lengths, reverse=True)   # longest first within a kind

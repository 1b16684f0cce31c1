"""`lavis-ib predict` end to end on tiny_vicuna, in process: each result record is checked
against the model called directly on that one input (its own prompt and candidates)."""
from __future__ import annotations

import json
import os

import pytest
import torch

from lavis_ib.common.errors import ConfigError, DataError
from lavis_ib.processors.media_files import load_image, load_video
from lavis_ib.cli.predict import main
from tests.predict.conftest import write_mp4, write_png
from tests.predict.test_predict_docs import documented_shapes

MODEL = ["--model", "instructblip:tiny_vicuna", "--no-progress"]
GEN = ["--num-beams", "2", "--max-length", "4"]


def read(path):
    return [json.loads(line) for line in open(path)]


def one(processor, path, kind="image"):
    return (load_video(path, processor) if kind == "video" else load_image(path, processor))[None]


def test_batched_records_equal_one_at_a_time(tmp_path, tiny_vicuna):
    model, processor = tiny_vicuna
    pngs = [write_png(tmp_path / f"{i}.png", i, (20 + 7 * i, 30)) for i in range(3)]
    clip = write_mp4(tmp_path / "clip.mp4")
    rows = [{"image": "0.png", "prompt": "What is it?"}, {"image": "1.png"},
            {"video": "clip.mp4", "prompt": "What happens?"}, {"image": "2.png", "prompt": "Why?"},
            {"image": "0.png", "candidates": ["a cat", "no"]},
            {"image": "1.png", "candidates": ["yes", "no", "a dog"], "prompt": "Dog?"}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    assert main(MODEL + GEN + ["--input", str(tmp_path / "in.jsonl"), "--prompt", "Default?",
                               "--batch-size", "3", "--output", str(out)]) == 0
    got = read(out)
    assert [r["input"] for r in got] == [os.path.basename(p) for p in  # as the records say
                                         (pngs[0], pngs[1], clip, pngs[2], pngs[0], pngs[1])]
    gen = dict(num_beams=2, max_length=4, min_length=1, repetition_penalty=1.5)
    for record, kind in zip(got[:4], ["image", "image", "video", "image"]):
        want = model.generate({"image": one(processor, str(tmp_path / record["input"]), kind),
                               "prompt": [record["prompt"]]}, **gen)
        assert record["answer"] == want[0]
    assert got[1]["prompt"] == "Default?"
    assert {tuple(r) for r in got} | {("input", "prompt", "skipped")} == documented_shapes()
    for record in got[4:]:
        labels = record["candidates"]
        image = one(processor, str(tmp_path / record["input"]))
        scores, _ = model.score_candidates({"image": image, "prompt": [record["prompt"]]}, labels)
        assert list(record["scores"]) == labels
        torch.testing.assert_close(torch.tensor(list(record["scores"].values())), scores[0],
                                   rtol=1e-4, atol=1e-4)
        best = sorted(labels, key=lambda c: -record["scores"][c])
        assert record["ranking"] == best and record["answer"] == best[0]


def test_candidates_use_the_models_append_eos_unless_told(tmp_path, tiny_vicuna):
    model, processor = tiny_vicuna
    png = write_png(tmp_path / "a.png", 3)
    sample = {"image": one(processor, png), "prompt": ["Cat?"]}
    results = {}
    for flag in ([], ["--append-eos"], ["--no-eos"]):
        out = tmp_path / f"r{len(results)}.jsonl"
        assert main(MODEL + [png, "--prompt", "Cat?", "--candidates", "yes,no",
                             "--output", str(out), *flag]) == 0
        results[tuple(flag)] = list(read(out)[0]["scores"].values())
    for flag, eos in (((), model.default_append_eos), (("--append-eos",), True),
                      (("--no-eos",), False)):
        want = model.score_candidates(sample, ["yes", "no"], append_eos=eos)[0][0].tolist()
        assert results[flag] == pytest.approx(want, abs=1e-4), flag
    assert results[("--append-eos",)] != pytest.approx(results[("--no-eos",)], abs=1e-4)


def test_resumed_file_equals_an_uninterrupted_run(tmp_path, caplog):
    """Nucleus sampling, so the per-batch seeding has to hold across the restart."""
    caplog.set_level("INFO")
    for i in range(5):
        write_png(tmp_path / f"{i}.png", i)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    args = MODEL + [str(tmp_path / "*.png"), "--prompt", "Describe.", "--use-nucleus-sampling",
                    "--max-length", "6", "--no-length-groups", "--seed", "7", "--batch-size", "2"]
    full, part = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    assert main(args + ["--output", str(full)]) == 0
    records = read(full)
    assert len(records) == 6 and "not a readable image" in records[-1]["skipped"]
    assert tuple(records[-1]) in documented_shapes()
    assert "1 of 6 inputs skipped" in caplog.text
    assert main(args + ["--output", str(part)]) == 0
    text = part.read_text()
    cut = text.index("\n", text.index("\n", text.index("\n") + 1) + 1) + 20
    part.write_text(text[:cut])         # killed while writing line 4 (in the second batch)
    caplog.clear()
    assert main(args + ["--output", str(part)]) == 0
    assert "line 4 is torn" in caplog.text and "resuming after 2 of 6" in caplog.text
    assert "1 record(s) of an unfinished batch are computed again" in caplog.text
    assert part.read_text() == full.read_text()
    assert main(args + ["--output", str(part)]) == 0     # complete: nothing to redo
    assert part.read_text() == full.read_text()
    with pytest.raises(ConfigError, match=r"seed: 7 then, 8 now"):
        main(args[:-3] + ["8", "--batch-size", "2", "--output", str(part)])
    assert main(args[:-3] + ["8", "--batch-size", "2", "--output", str(part), "--overwrite"]) == 0
    assert part.read_text() != full.read_text()


def test_single_image_prints_and_bad_input_is_one_error(tmp_path, capsys):
    png = write_png(tmp_path / "a.png", 0)
    assert main(MODEL + GEN + ["--image", png, "--prompt", "What?"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith(png + "\t")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"junk")
    with pytest.raises(DataError, match=r"no input could be read \(1 skipped; .*not a readable"):
        main(MODEL + ["--image", str(broken), "--prompt", "x"])
    with pytest.raises(ConfigError, match="--min-length must not exceed --max-length"):
        main(MODEL + [png, "--prompt", "x", "--min-length", "5", "--max-length", "4"])
    out = tmp_path / "kept.jsonl"
    assert main(MODEL + GEN + [png, "--prompt", "x", "--output", str(out)]) == 0
    kept = out.read_text()
    with pytest.raises(ConfigError, match="model.num_query_token must be an integer >= 1"):
        main(MODEL + [png, "--prompt", "x", "--options", "num_query_token=0",
                      "--output", str(out), "--overwrite"])
    assert out.read_text() == kept          # refused before --overwrite removes anything
    with pytest.raises(ConfigError, match="is the input"):
        main(MODEL + [png, "--prompt", "x", "--output", png, "--overwrite"])
    with pytest.raises(ConfigError, match="no input"):
        main(MODEL + ["--prompt", "x"])
    with pytest.raises(ConfigError, match="--overwrite needs --output"):
        main(MODEL + [png, "--prompt", "x", "--overwrite"])


def test_generation_flags_are_checked_against_the_models_generate(monkeypatch):
    """A model whose `generate` takes only beams and length: predict's other defaults are
    not passed to it, and a flag it does not take is refused before anything loads."""
    from lavis_ib.common.registry import registry
    from lavis_ib.models.base_model import BaseModel
    from lavis_ib.cli.predict import build_parser
    from lavis_ib.predict.run import generate_settings

    class ShortGenerate(BaseModel):
        def generate(self, samples, num_beams: int = 1, max_length: int = 8):
            raise AssertionError("not called")

    monkeypatch.setattr(registry, "get_model_class", lambda name: ShortGenerate)
    parse = build_parser().parse_args
    assert generate_settings(parse(MODEL + ["--max-length", "3"]), "short") == {
        "num_beams": 5, "max_length": 3}
    with pytest.raises(ConfigError, match="takes no --temperature, --top-p; it takes max_length, "
                                          "num_beams"):
        generate_settings(parse(MODEL + ["--top-p", "0.5", "--temperature", "2"]), "short")

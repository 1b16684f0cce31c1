"""`lavis-ib predict` as a command: the single-image form, one-line errors, and two
separate processes writing the same results (the tiny types are seeded on load)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lavis_ib.common.errors import ConfigError, DataError, LavisIbError
from lavis_ib.predict import build_parser, main
from tests.predict.conftest import write_mp4


def test_generate_and_rank(pngs, capsys):
    assert main(["--model", "instructblip:tiny_vicuna", "--image", *pngs,
                 "--prompt", "What is it?", "--num-beams", "2", "--max-length", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == pngs
    assert main(["--model", "instructblip:tiny_vicuna", "--options", "qformer_text_input=false",
                 "--image", pngs[0], "--prompt", "Is it a cat?",
                 "--candidates", "yes, no,maybe"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == pngs[0] and len(out) == 4
    scores = [float(line.split()[0]) for line in out[1:]]
    assert scores == sorted(scores, reverse=True)
    assert sorted(line.split()[1] for line in out[1:]) == ["maybe", "no", "yes"]


def test_bad_input(pngs, tmp_path):
    with pytest.raises(ConfigError, match="NAME:TYPE"):
        main(["--model", "instructblip", "--image", pngs[0], "--prompt", "x"])
    with pytest.raises(DataError, match="does not exist"):
        main(["--model", "instructblip:tiny_vicuna", "--image", str(tmp_path / "no.png"),
              "--prompt", "x"])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(DataError, match="not a readable image"):
        main(["--model", "instructblip:tiny_vicuna", "--image", str(broken), "--prompt", "x"])
    with pytest.raises(ConfigError, match="unknown setting"):
        main(["--model", "instructblip:tiny_vicuna", "--options", "pretrainedd=x",
              "--image", pngs[0], "--prompt", "x"])
    with pytest.raises(LavisIbError, match="unknown model_type"):
        main(["--model", "instructblip:tiny_vicunaa", "--image", pngs[0], "--prompt", "x"])


def test_usage_names_the_command():
    assert build_parser().format_usage().startswith("usage: lavis-ib predict ")


def test_offline_hub_id_is_one_clear_line(pngs):
    proc = subprocess.run([sys.executable, "-m", "lavis_ib.predict",
                           "--model", "instructblip:vicuna7b", "--image", pngs[0], "--prompt", "x"],
                          capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""},
                          cwd=os.getcwd(), timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.count("\n") == 0 and "error:" in err, err
    assert "Salesforce/instructblip-vicuna-7b" in err and "pretrained=DIR" in err


def test_video_generation(tmp_path, capsys):
    path = write_mp4(tmp_path / "clip.mp4")
    assert main(["--model", "instructblip:tiny_vicuna", "--video", path,
                 "--prompt", "what happens?", "--num-beams", "1", "--max-length", "3"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(path + "\t")


def test_two_processes_write_the_same_results(pngs, tmp_path):
    """Random weights (seeded on load), nucleus sampling (--seed) and ranking, each in its
    own `lavis-ib predict` process: the two JSONL files are byte for byte equal."""
    records = tmp_path / "in.jsonl"
    records.write_text(json.dumps({"image": pngs[0], "prompt": "Describe it."}) + "\n"
                       + json.dumps({"image": pngs[1], "candidates": ["a cat", "no"]}) + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "lavis_ib.cli", "predict", "--model", "instructblip:tiny_vicuna",
         "--input", str(records), "--prompt", "Cat?",
         "--use-nucleus-sampling", "--max-length", "8", "--seed", "3", "--no-progress",
         "--output", str(tmp_path / f"out{i}.jsonl")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    first, second = ((tmp_path / f"out{i}.jsonl").read_text() for i in range(2))
    assert first == second
    got = [json.loads(line) for line in first.splitlines()]
    assert "answer" in got[0] and set(got[1]["scores"]) == {"a cat", "no"}

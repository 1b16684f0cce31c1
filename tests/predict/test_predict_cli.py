"""`lavis-ib predict` as a command: the single-image form, one-line errors, and two
separate processes writing the same results (the tiny types are seeded on load)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lavis_ib.common.errors import ConfigError, DataError, LavisIbError
from lavis_ib.cli.predict import build_parser, main
from tests.predict.conftest import write_mp4, write_png


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


@pytest.mark.integration
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


@pytest.mark.integration
def test_two_processes_write_the_same_results_and_a_killed_run_resumes(tmp_path):
    """Random weights (seeded on load), nucleus sampling (--seed) and ranking, each run in
    its own `lavis-ib predict` process: process B is killed (SIGKILL) in the middle of
    the run; what it wrote equals process A's lines, and B's file resumed equals A's."""
    rows = []
    for i in range(48):        # cheap next to the start of a process: room to kill B
        write_png(tmp_path / f"{i}.png", i)
        rows.append({"image": f"{i}.png", **({"candidates": ["a cat", "no"]} if i % 3 == 0
                                              else {"prompt": f"Describe image {i}."})})
    records = tmp_path / "in.jsonl"
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["--model", "instructblip:tiny_vicuna", "--input", str(records), "--prompt", "Cat?",
            "--use-nucleus-sampling", "--max-length", "8", "--seed", "3", "--batch-size", "2",
            "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    outs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    procs = [subprocess.Popen([sys.executable, "-m", "lavis_ib.cli.dispatch", "predict", *args,
                               "--output", str(out)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env=env) for out in outs]
    deadline = time.monotonic() + 240
    while not (outs[1].exists() and outs[1].read_text().count("\n") >= 4):
        assert procs[1].poll() is None and time.monotonic() < deadline, procs[1].stderr.read()
        time.sleep(0.005)
    procs[1].send_signal(signal.SIGKILL)
    procs[1].wait(timeout=60)
    _, err = procs[0].communicate(timeout=240)
    assert procs[0].returncode == 0, err
    full, killed = outs[0].read_text(), outs[1].read_text()
    complete = killed[:killed.rindex("\n") + 1]
    assert 4 <= complete.count("\n") < len(rows), "B was not stopped in the middle"
    assert full.startswith(complete)                   # two processes, the same lines
    assert main(args + ["--output", str(outs[1])]) == 0
    assert outs[1].read_text() == full
    got = [json.loads(line) for line in full.splitlines()]
    assert "answer" in got[1] and set(got[0]["scores"]) == {"a cat", "no"}

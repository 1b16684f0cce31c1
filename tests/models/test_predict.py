"""`python -m lavis_ib.predict` on tiny_vicuna with PNGs written by the test."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lavis_ib.common.errors import ConfigError, DataError, LavisIbError
from lavis_ib.predict import main


@pytest.fixture()
def pngs(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (20 + 5 * i, 30, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_generate_and_rank(pngs, capsys):
    assert main(["--model", "instructblip:tiny_vicuna", "--image", *pngs,
                 "--prompt", "What is it?", "--num-beams", "2", "--max-length", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == pngs
    assert main(["--model", "instructblip:tiny_vicuna", "--options", "qformer_text_input=false",
                 "--image", pngs[0], "--prompt", "Is it a cat?", "--candidates", "yes, no,maybe"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == pngs[0] and len(out) == 4
    scores = [float(line.split()[0]) for line in out[1:]]
    assert scores == sorted(scores, reverse=True)
    assert sorted(line.split()[1] for line in out[1:]) == ["maybe", "no", "yes"]


def test_bad_input(pngs, tmp_path):
    with pytest.raises(ConfigError, match="NAME:TYPE"):
        main(["--model", "instructblip", "--image", pngs[0], "--prompt", "x"])
    with pytest.raises(DataError, match="does not exist"):
        main(["--model", "instructblip:tiny_vicuna", "--image", str(tmp_path / "no.png"), "--prompt", "x"])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(DataError, match="not a readable image"):
        main(["--model", "instructblip:tiny_vicuna", "--image", str(broken), "--prompt", "x"])
    with pytest.raises(ConfigError, match="unknown setting"):
        main(["--model", "instructblip:tiny_vicuna", "--options", "pretrainedd=x",
              "--image", pngs[0], "--prompt", "x"])
    with pytest.raises(LavisIbError, match="unknown model_type"):
        main(["--model", "instructblip:tiny_vicunaa", "--image", pngs[0], "--prompt", "x"])


def test_offline_hub_id_is_one_clear_line(pngs):
    proc = subprocess.run([sys.executable, "-m", "lavis_ib.predict", "--model", "instructblip:vicuna7b",
                           "--image", pngs[0], "--prompt", "x"],
                          capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""},
                          cwd=__import__("os").getcwd(), timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.count("\n") == 0 and "error:" in err, err
    assert "Salesforce/instructblip-vicuna-7b" in err and "pretrained=DIR" in err


def test_video_generation(tmp_path, capsys):
    import av

    path = str(tmp_path / "clip.mp4")
    rng = np.random.default_rng(1)
    with av.open(path, mode="w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for _ in range(8):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8),
                                               format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert main(["--model", "instructblip:tiny_vicuna", "--video", path, "--prompt", "what happens?",
                 "--num-beams", "1", "--max-length", "3"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(path + "\t")

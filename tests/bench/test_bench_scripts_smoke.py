"""The CPU benchmarks in `--smoke` mode: each runs, checks its own correctness condition
(equal losses and gradients, equal greedy outputs) and ends with its summary line."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", script), "--smoke", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=280,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("summary: "), proc.stdout
    return proc.stdout


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """Shared by train_step and generation (the first script to run writes it)."""
    return str(tmp_path_factory.mktemp("bench_ckpt") / "smoke")


@pytest.mark.integration
def test_train_step_smoke(checkpoint):
    out = run("train_step.py", "--dir", checkpoint, "--threads", "1", "--reps", "1")
    check = re.search(r"check: \|loss diff\| ([\d.e+-]+), query-token grad relative diff ([\d.e+-]+)", out)
    assert check and float(check.group(1)) <= 1e-4 and float(check.group(2)) <= 1e-3, out
    summary = out.strip().splitlines()[-1]
    assert re.search(r"time ratio .* wall [\d.]+x, CPU [\d.]+x; peak step memory ratio .* [\d.]+", summary)
    for model in ("lavis_ib", "transformers"):
        row = next(l for l in out.splitlines() if l.startswith(f"| {model} "))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert all(float(c) > 0 for c in cells[1:]), row   # times, rate and memory measured


@pytest.mark.integration
def test_generation_smoke(checkpoint):
    out = run("generation.py", "--dir", checkpoint, "--threads", "1")
    summary = out.strip().splitlines()[-1]
    assert "greedy outputs equal" in summary
    assert re.search(r"greedy wall [\d.]+x .* beam5 wall [\d.]+x", summary), summary


@pytest.mark.integration
def test_loader_smoke(tmp_path):
    out = run("loader.py", "--root", str(tmp_path / "fx"))
    rows = {l.split("|")[1].strip(): l for l in out.splitlines() if l.startswith("| lavis")}
    assert set(rows) == {"lavis_ib", "lavis-style", "lavis_ib, 0 workers"}
    for row in rows.values():
        assert float(row.strip().strip("|").split("|")[-1]) > 0, row
    assert re.search(r"samples/s ratio \(lavis_ib / lavis-style\) [\d.]+x with 2 vs 12", out)


@pytest.mark.integration
def test_lora_memory_smoke():
    out = run("lora_memory.py")
    assert re.search(r"summary: tiny_vicuna: LoRA r=8 adds 4,096 trainable parameters", out), out


@pytest.mark.integration
def test_train_throughput_smoke(tmp_path):
    out = run("train_throughput.py", "--dir", str(tmp_path / "ckpt"), "--threads", "1",
              "--batches", "2", "--no-eval")   # the evaluation pass has its own smoke test
    checks = re.findall(r"check: packed vs padded loss, largest relative difference ([\d.e+-]+)", out)
    assert len(checks) == 2 and all(float(c) <= 1e-5 for c in checks), out
    assert re.search(r"^train speedup vs padded: [\d.]+x", out, re.M), out
    saved = re.findall(r"^positions saved(?: \(mix_unit sample\))?: (\d+)%", out, re.M)
    assert len(saved) == 2 and all(int(s) > 0 for s in saved), out
    rows = [l for l in out.splitlines() if l.startswith(("| padded ", "| packed "))]
    assert len(rows) == 4 and all(float(c) > 0 for r in rows for c in r.strip("|").split("|")[1:])
    assert re.search(r"summary: mix_unit micro_batch: train speedup [\d.]+x", out)

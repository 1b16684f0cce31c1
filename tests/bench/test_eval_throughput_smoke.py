"""bench/eval_throughput.py in `--smoke` mode: both batch orders run through the evaluation
loop, give identical records (the script fails otherwise) and are timed; the last line is
the speedup the train bench prints too."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.integration
def test_eval_throughput_smoke():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "eval_throughput.py"),
                           "--smoke", "--threads", "1"], capture_output=True, text=True,
                          cwd=ROOT, timeout=280, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "records identical in both orders" in out, out
    rows = {l.split("|")[1].strip(): l for l in out.splitlines() if l.startswith("| ")}
    order, grouped = (rows[k].strip().strip("|").split("|") for k in ("dataset order", "grouped"))
    assert all(float(c) > 0 for c in order[1:] + grouped[1:]), out   # times, rates, positions
    assert int(grouped[-1]) < int(order[-1]), out    # grouping computes fewer positions
    assert re.fullmatch(r"eval speedup vs dataset order: \d+\.\dx", out.strip().splitlines()[-1])

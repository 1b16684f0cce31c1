"""`bench/llm_memory.py --smoke` (one round, fp32): both sides run in their own processes,
the quantised LLM's weights are smaller, its logits agree, and the summary line is printed."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.integration
def test_llm_memory_smoke():
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "llm_memory.py"), "--smoke", "--precisions",
         "fp32", "--rounds", "1", "--reps", "1", "--threads", "1"],
        capture_output=True, text=True, cwd=ROOT, timeout=280, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = proc.stdout.strip().splitlines()[-1]
    found = re.search(r"^summary: int8_weight_only/none fp32 weights ([\d.]+)x, .*forward [\d.]+x.*"
                      r"generate [\d.]+x.*logits rel diff ([\d.e+-]+), top-1 agreement ([\d.]+)%", summary)
    assert found, summary
    # smoke LLM: 64 wide, 2 layers, 1000-token vocabulary; 14 of its 15 linear layers quantised
    assert 0.6 < float(found.group(1)) < 0.8
    assert float(found.group(2)) < 0.01 and float(found.group(3)) > 90

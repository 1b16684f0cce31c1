"""bench/ranking.py --smoke: shared-prefix scores equal the LAVIS procedure's; in the
vocabulary scenario the trie's scores equal both."""
from __future__ import annotations

import importlib.util
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_ranking_bench_smoke(capsys):
    spec = importlib.util.spec_from_file_location("bench_ranking", os.path.join(ROOT, "bench", "ranking.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--smoke", "--repeats", "1", "--batch", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"speedup: \d+\.\dx", lines[-1])
    diffs = [float(m) for line in lines for m in re.findall(r"max \|score diff\| (\S+)", line)]
    assert len(diffs) == 2 and max(diffs) <= 1e-4
    # the vocabulary scenario: trie scores equal both procedures', its speedups printed
    vocab = [float(m) for line in lines
             for m in re.findall(r"max \|score diff to trie\| (\S+)", line)]
    assert len(vocab) == 2 and max(vocab) <= 1e-4
    assert any(re.fullmatch(r"vocab speedup vs LAVIS: \d+\.\dx", line) for line in lines)
    assert any(re.fullmatch(r"vocab speedup vs shared prefix: \d+\.\dx", line) for line in lines)
    assert any(re.search(r"1 token \d+, 2 tokens \d+, 3\+ tokens \d+; trie \d+ nodes", line)
               for line in lines)

"""docs/predict.md cannot drift from the command: every flag it names exists and every
flag of the command is described; its example result records have the fields a run writes
(the run tests compare real records with `documented_shapes`)."""
from __future__ import annotations

import json
import os
import re

from lavis_ib.cli.predict import build_parser
from tests.conftest import REPO_ROOT

DOC = os.path.join(REPO_ROOT, "docs", "predict.md")


def documented_shapes() -> set[tuple[str, ...]]:
    """The field names, in order, of each example result record in docs/predict.md."""
    blocks = re.findall(r"```json\n(.*?)```", open(DOC).read(), re.DOTALL)
    records = [json.loads(line) for block in blocks for line in block.splitlines()
               if line.startswith('{"input"')]
    return {tuple(r) for r in records}


def test_flags_match_the_parser():
    text = open(DOC).read()
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", text))
    flags = {s for a in build_parser()._actions for s in a.option_strings if s.startswith("--")}
    assert named - flags == set(), "docs/predict.md names flags the command lacks"
    assert flags - named - {"--help"} == set(), "flags docs/predict.md does not describe"


def test_example_records_cover_the_three_kinds():
    assert documented_shapes() == {
        ("input", "prompt", "answer"),
        ("input", "prompt", "candidates", "scores", "ranking", "answer"),
        ("input", "prompt", "skipped")}

"""docs/getting_started.md's first model runs as shown (a tiny random model, offline)."""
from __future__ import annotations

import re

from docs_pages import read


def test_first_model_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", read("docs/getting_started.md"), re.DOTALL)
    assert len(blocks) == 1 and "tiny_vicuna" in blocks[0]
    code = blocks[0].rstrip().splitlines()
    code[-1] = "answer = " + code[-1]          # keep what the last line returns
    scope: dict = {}
    exec(compile("\n".join(code), "docs/getting_started.md", "exec"), scope)
    assert isinstance(scope["answer"], list) and len(scope["answer"]) == 1
    assert isinstance(scope["answer"][0], str)

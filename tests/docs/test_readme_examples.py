"""README's Python examples run as written, with the tiny random type in place of the 7B one
(what a user without a GPU does first): `tiny_vicuna` for `vicuna7b`, the CPU for CUDA and a
fixture image for `photo.jpg`. Nothing else of the example is changed."""
from __future__ import annotations

import os
import re

import numpy as np
from PIL import Image

from tests.conftest import REPO_ROOT


def _readme_python_blocks() -> list[str]:
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.DOTALL)


def test_readme_python_examples_run_with_the_tiny_type(tmp_path, monkeypatch):
    blocks = _readme_python_blocks()
    assert blocks, "README has no Python example"
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(photo)
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        assert '"vicuna7b"' in block or "load_model" not in block, "the substitution no longer applies"
        code = block.replace('"vicuna7b"', '"tiny_vicuna"').replace('"cuda"', '"cpu"')
        scope: dict = {}
        exec(compile(code, "README.md", "exec"), scope)   # default generation settings included
        if "scores" in scope:
            scores, mask = scope["scores"], scope["mask"]
            assert scores.shape == mask.shape == (1, 3) and bool(mask.all())

"""Fixtures of the guide tests: the example modules of docs/examples importable as
plugins, a tiny `my_vqa` copy on disk, and composed example projects."""
from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(HERE)), "docs", "examples")
for path in (EXAMPLES, HERE):
    if path not in sys.path:   # the guides run them with PYTHONPATH=docs/examples
        sys.path.insert(0, path)

from docs_helpers import write_my_vqa  # noqa: E402


@pytest.fixture(scope="session")
def my_vqa_root(tmp_path_factory) -> str:
    return write_my_vqa(str(tmp_path_factory.mktemp("my_vqa")))


@pytest.fixture(scope="session")
def ok_vqa_root(fixture_root) -> str:
    return fixture_root.path


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread while these tests run: the tiny models gain nothing from more,
    and on a busy 2-core machine two threads made a training step ~20x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def _forget_example_plugins():
    """After each test module, drop what the example plugins registered (and the modules),
    so that tests elsewhere see only the built-in models, builders and tasks."""
    yield
    from lavis_ib import registry

    registry.builders.unregister("my_vqa")
    registry.tasks.unregister("exact_match")
    registry.models.unregister("char_lm")
    for module in ("my_vqa", "exact_match_task", "char_lm"):
        sys.modules.pop(module, None)

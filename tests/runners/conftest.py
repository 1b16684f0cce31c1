"""Fixtures of the runner tests: toy projects and launching training runs.

Runs that must die (fault injection) or use several processes run as subprocesses:
`python -m lavis_ib.train` or `torchrun --standalone --nproc_per_node N -m lavis_ib.train`,
each with a hard timeout.
"""
from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
pytest.register_assert_rewrite("fault_helpers")  # its asserts report values too
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from runner_helpers import BASE_RUN, launch, losses, write_project  # noqa: E402,F401


@pytest.fixture(scope="session")
def toys():
    import runner_toys

    return runner_toys

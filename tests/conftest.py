"""Suite-wide test setup: offline, deterministic, few threads (CI has 2 cores)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# tiny models are overhead-bound: one intra-op thread is fastest, above all on a busy
# 2-core machine, and leaves the other core to multi-process tests
torch.set_num_threads(1)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


#: what makes a test `integration` (tests/README.md); the unit tier must not do any of it
_PYTHON_PROGRAMS = ("python", "torchrun", "lavis-ib")


@pytest.fixture(autouse=True)
def _unit_tier_guard(request, monkeypatch):
    """An unmarked test that starts a Python process or trains through the runner fails,
    so `make test-unit` stays the fast tier by construction, not by memory."""
    if request.node.get_closest_marker("integration") is not None:
        yield
        return
    test = request.node.nodeid

    def refuse(what: str):
        raise AssertionError(f"{test} {what}, so it must be marked @pytest.mark.integration "
                             f"(tests/README.md)")

    real_init = subprocess.Popen.__init__

    def popen_init(self, args, *rest, **kwargs):
        first = args[0] if isinstance(args, (list, tuple)) else str(args).split()[0]
        if str(first) == sys.executable or os.path.basename(str(first)).startswith(_PYTHON_PROGRAMS):
            refuse(f"starts a process ({' '.join(map(str, args))[:100] if isinstance(args, (list, tuple)) else args})")
        real_init(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", popen_init)
    from lavis_ib.runners.runner_iter import RunnerIter

    monkeypatch.setattr(RunnerIter, "train", lambda self, *a, **k: refuse("trains a model through the runner"))
    yield



class FixtureRoot:
    """Every dataset's fixture copy, written once per test session (`lavis_ib.testing.fixtures`).

    Read-only by convention: a test that damages or deletes files writes its own copy
    with `write_fixtures(tmp_path, [...])`. `path` is the folder projects point
    `LAVIS_IB_DEMO_DATA` / `cache_root` at; `overrides[name]` is the `datasets.<name>`
    mapping that points a dataset entry at its copy.
    """

    def __init__(self, path: str) -> None:
        from lavis_ib.testing.fixtures import write_fixtures

        self.path = path
        self.overrides = write_fixtures(path)


@pytest.fixture(scope="session")
def fixture_root(tmp_path_factory) -> FixtureRoot:
    return FixtureRoot(str(tmp_path_factory.mktemp("fixture_root")))


# the tiny random InstructBLIP types in eval mode, loaded once per session (never train them)
@pytest.fixture(scope="session")
def tiny_vicuna():
    from lavis_ib import load_model

    torch.manual_seed(0)
    return load_model("instructblip", "tiny_vicuna", is_eval=True)


@pytest.fixture(scope="session")
def tiny_flant5():
    from lavis_ib import load_model

    torch.manual_seed(0)
    return load_model("instructblip", "tiny_flant5", is_eval=True)


@pytest.fixture(scope="session")
def tiny_opt():
    from lavis_ib import load_model

    torch.manual_seed(0)
    return load_model("instructblip", "tiny_opt", is_eval=True)

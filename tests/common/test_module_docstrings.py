"""Every module of lavis_ib opens with a docstring of 2-5 lines saying what it is for and why
it exists; details belong on the class or function they describe, or in docs/."""
from __future__ import annotations

import ast
import glob
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MIN_LINES, MAX_LINES = 2, 5

# Modules whose docstrings are being rewritten elsewhere and still fail; shrink this list
# as they are done (the test below fails for an entry that passes, so none lingers).
EXEMPT = {
    "lavis_ib/cli/data.py",
    "lavis_ib/cli/demo.py",
    "lavis_ib/cli/export.py",
    "lavis_ib/common/quiet.py",
    "lavis_ib/common/schema.py",
    "lavis_ib/datasets/bad_samples.py",
    "lavis_ib/models/components/qformer.py",
    "lavis_ib/models/llm/lora.py",
    "lavis_ib/processors/__init__.py",
    "lavis_ib/processors/base_processor.py",
    "lavis_ib/processors/build.py",
    "lavis_ib/processors/builtin.py",
    "lavis_ib/processors/image.py",
    "lavis_ib/processors/random_augment.py",
    "lavis_ib/report/zoo.py",
    "lavis_ib/runners/eval_loop.py",
}


def modules() -> list[str]:
    paths = glob.glob(os.path.join(REPO, "lavis_ib", "**", "*.py"), recursive=True)
    return sorted(os.path.relpath(p, REPO).replace(os.sep, "/") for p in paths)


def docstring_lines(path: str, root: str = REPO) -> int:
    """Lines of the module docstring of `path` (relative to `root`; 0: none)."""
    with open(os.path.join(root, path), encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read()))
    return len(doc.strip().splitlines()) if doc else 0


def test_every_module_docstring_has_two_to_five_lines():
    bad = [f"{path}: {n} lines" for path in modules() if path not in EXEMPT
           and not MIN_LINES <= (n := docstring_lines(path)) <= MAX_LINES]
    assert not bad, (f"module docstrings must have {MIN_LINES}-{MAX_LINES} lines (what the module "
                     f"is for and why; move details to the class or function they describe, or "
                     f"to docs/):\n" + "\n".join(bad))


@pytest.mark.parametrize("path", sorted(EXEMPT))
def test_exempt_modules_still_exist_and_still_fail(path):
    assert os.path.isfile(os.path.join(REPO, path)), f"{path} is gone: remove it from EXEMPT"
    n = docstring_lines(path)
    assert not MIN_LINES <= n <= MAX_LINES, f"{path} passes now ({n} lines): remove it from EXEMPT"


def test_the_line_count_reads_the_module_docstring(tmp_path):
    (tmp_path / "one.py").write_text('"""One line."""\nx = 1\n')
    (tmp_path / "two.py").write_text('"""Summary.\n\nWhy it exists.\n"""\n')
    (tmp_path / "none.py").write_text("# a comment\nx = '''not a docstring'''\n")
    assert [docstring_lines(p, str(tmp_path)) for p in ("one.py", "two.py", "none.py")] == [1, 3, 0]

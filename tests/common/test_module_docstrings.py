"""Every module of lavis_ib opens with a docstring of 2-5 lines saying what it is for and why
it exists; details belong on the class or function they describe, or in docs/."""
from __future__ import annotations

import ast
import glob
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MIN_LINES, MAX_LINES = 2, 5


def modules() -> list[str]:
    paths = glob.glob(os.path.join(REPO, "lavis_ib", "**", "*.py"), recursive=True)
    return sorted(os.path.relpath(p, REPO).replace(os.sep, "/") for p in paths)


def docstring_lines(path: str, root: str = REPO) -> int:
    """Lines of the module docstring of `path` (relative to `root`; 0: none)."""
    with open(os.path.join(root, path), encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read()))
    return len(doc.strip().splitlines()) if doc else 0


def test_every_module_docstring_has_two_to_five_lines():
    found = modules()
    assert "lavis_ib/__init__.py" in found and "lavis_ib/processors/image.py" in found, found[:5]
    bad = [f"{path}: {n} lines" for path in found
           if not MIN_LINES <= (n := docstring_lines(path)) <= MAX_LINES]
    assert not bad, (f"module docstrings must have {MIN_LINES}-{MAX_LINES} lines (what the module "
                     f"is for and why; move details to the class or function they describe, or "
                     f"to docs/):\n" + "\n".join(bad))


def test_the_line_count_reads_the_module_docstring(tmp_path):
    (tmp_path / "one.py").write_text('"""One line."""\nx = 1\n')
    (tmp_path / "two.py").write_text('"""Summary.\n\nWhy it exists.\n"""\n')
    (tmp_path / "none.py").write_text("# a comment\nx = '''not a docstring'''\n")
    assert [docstring_lines(p, str(tmp_path)) for p in ("one.py", "two.py", "none.py")] == [1, 3, 0]

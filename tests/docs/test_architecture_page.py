"""docs/architecture.md shows the package as it is: its tree has one line per folder of
lavis_ib (every Python package, plus the data folders at its root), and its Mermaid
diagram puts each folder on the floor that tests/common/test_import_graph.py's `FLOORS`
gives it."""
from __future__ import annotations

import os
import re

from docs_includes import REPO
from docs_pages import read
from tests.common.test_import_graph import FLOORS

PACKAGE = os.path.join(REPO, "lavis_ib")


def section(title: str) -> str:
    return read("docs/architecture.md").split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def tree_folders() -> list[str]:
    """The folders of the tree block, as paths relative to the repository."""
    block = re.search(r"```\n(lavis_ib/.*?)```", section("The package"), re.DOTALL).group(1)
    stack: list[str] = []
    folders = []
    for line in block.splitlines():
        m = re.match(r"^( *)([\w.]+)/\s", line + " ")
        assert m, f"not a folder line: {line!r}"
        depth = len(m.group(1)) // 2
        stack[depth:] = [m.group(2)]
        folders.append("/".join(stack))
    return folders


def package_folders() -> set[str]:
    """lavis_ib, every folder holding an __init__.py, and the data folders at its root."""
    found = {"lavis_ib"}
    for root, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
        rel = os.path.relpath(root, REPO)
        if "__init__.py" in files:
            found.add(rel)
        elif os.path.dirname(root) == PACKAGE and not any(f.endswith(".py") for f in files):
            found.add(rel)   # configs/, assets/
    return found


def test_tree_has_one_line_per_folder():
    folders = tree_folders()
    assert len(folders) == len(set(folders)), "a folder is listed twice"
    assert set(folders) == package_folders(), (
        f"missing from the tree: {sorted(package_folders() - set(folders))}; "
        f"not in the package: {sorted(set(folders) - package_folders())}")
    assert {"lavis_ib/configs", "lavis_ib/assets", "lavis_ib/models/llm"} <= set(folders)


def diagram_floors(layers: str) -> dict[str, int]:
    """{module prefix: floor} read from the Mermaid block's `subgraph floorN` groups of the
    layers section `layers`."""
    block = re.search(r"```mermaid\n(.*?)```", layers, re.DOTALL).group(1)
    floors = {}
    for number, body in re.findall(r"subgraph floor(\d+) .*?\n(.*?)\n\s*end\b", block, re.DOTALL):
        for label in re.findall(r'\w+\["([^"]+)"\]', body):
            folder = label.split()[0].rstrip("/")
            floors["lavis_ib" if folder == "lavis_ib" else f"lavis_ib.{folder}"] = int(number)
    chain = re.findall(r"floor(\d+)", block.split("end\n")[-1])
    assert [int(n) for n in chain] == sorted(set(floors.values()), reverse=True), \
        "the arrows should run from each floor to the one below it"
    return floors


def test_diagram_floors_are_the_import_graph_test_floors():
    assert diagram_floors(section("The layers")) == FLOORS


def test_the_diagram_reader_sees_a_folder_on_the_wrong_floor():
    layers = section("The layers")
    moved = layers.replace('    testing["testing/"]\n', "").replace(
        '    models["models/"]\n', '    models["models/"]\n    testing["testing/"]\n')
    assert diagram_floors(moved)["lavis_ib.testing"] == 3 != FLOORS["lavis_ib.testing"]

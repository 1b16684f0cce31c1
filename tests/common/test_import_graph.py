"""The static import graph of the `lavis_ib` package has no cycle.

Every import statement counts, function-local ones included: an import moved into a
function to dodge a cycle still couples the two modules both ways, and is the first
thing to break when someone moves it back. Relative imports are resolved against the
importing module's package. A module's edge goes to the deepest `lavis_ib` module an
import names (`from lavis_ib.models import loading` -> `lavis_ib.models.loading`;
`from lavis_ib.models import BaseModel` -> `lavis_ib.models`).
"""
from __future__ import annotations

import ast
import os

from tests.conftest import REPO_ROOT

PACKAGE = "lavis_ib"


def package_modules(root: str = os.path.join(REPO_ROOT, PACKAGE)) -> dict[str, str]:
    """{dotted module name: file} of every .py file under the package."""
    modules = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(folder, name), os.path.dirname(root))
            parts = rel[:-3].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = os.path.join(folder, name)
    return modules


def _imported_names(module: str, is_package: bool, tree: ast.AST) -> list[str]:
    """Dotted names each import statement of `module` may load (absolute)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")
                package = package if is_package else package[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names]
    return names


def import_graph(modules: dict[str, str]) -> dict[str, set[str]]:
    """{module: package modules its import statements name}."""
    graph = {}
    for module, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
        targets = set()
        for name in _imported_names(module, path.endswith("__init__.py"), tree):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle [a, b, ..., a] of `graph`, or None (iterative depth-first search)."""
    state: dict[str, int] = {}          # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_the_package_has_no_import_cycle():
    modules = package_modules()
    assert "lavis_ib.models.base_model" in modules and len(modules) > 30
    cycle = find_cycle(import_graph(modules))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_walk_sees_function_local_and_relative_imports(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import b\n")
    (pkg / "sub" / "a.py").write_text("def f():\n    from lavis_ib.sub.b import g\n")
    (pkg / "sub" / "b.py").write_text("from .a import f\nfrom .. import sub\n")
    graph = import_graph(package_modules(str(pkg)))
    assert graph["lavis_ib.sub.a"] == {"lavis_ib.sub.b"}
    assert graph["lavis_ib.sub.b"] == {"lavis_ib.sub.a", "lavis_ib.sub", "lavis_ib"}
    assert graph["lavis_ib.sub"] == {"lavis_ib.sub.b"}
    cycle = find_cycle(graph)
    assert cycle[0] == cycle[-1] and len(cycle) >= 3


def test_layers_import_only_downwards():
    """common imports no other layer; components import no model package; model packages
    import no other model package (what two models share is a component)."""
    graph = import_graph(package_modules())
    models = {m.split(".")[2] for m in graph if m.startswith("lavis_ib.models.")
              and m.count(".") >= 3 and m.split(".")[2] != "components"}
    assert {"instructblip", "blip2"} <= models
    wrong = []
    for module, targets in graph.items():
        for target in targets:
            if module.startswith("lavis_ib.common") and not target.startswith("lavis_ib.common"):
                wrong.append((module, target))
            if module.startswith("lavis_ib.models.components") and \
                    any(target.startswith(f"lavis_ib.models.{m}") for m in models):
                wrong.append((module, target))
            for m in models:
                if module.startswith(f"lavis_ib.models.{m}.") and any(
                        target.startswith(f"lavis_ib.models.{other}") for other in models - {m}):
                    wrong.append((module, target))
    assert not wrong, wrong

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


#: each layer may import its own and lower floors (by module prefix; longest prefix wins)
FLOORS = {
    "lavis_ib.common": 0,
    "lavis_ib": 1,                              # the package API: registry, version, lazy loaders
    "lavis_ib.processors": 2, "lavis_ib.testing": 2,
    "lavis_ib.datasets": 3, "lavis_ib.models": 3,
    "lavis_ib.tasks": 4,
    "lavis_ib.runners": 5,
    "lavis_ib.predict": 6, "lavis_ib.report": 6, "lavis_ib.web": 6,
    "lavis_ib.cli": 7,
}
#: `python -m` spellings kept for LAVIS users and earlier releases: each only runs a command
SHIMS = {"lavis_ib.train", "lavis_ib.evaluate", "lavis_ib.demo", "lavis_ib.datasets.fixtures",
         "lavis_ib.predict.__main__"}
#: parts every model shares (never importing a model package); the rest of models/ are models
SHARED_MODEL_PARTS = ("components", "llm", "weights")


def floor(module: str) -> int:
    prefix = max((p for p in FLOORS if module == p or module.startswith(p + ".")), key=len)
    return FLOORS[prefix]


_MODEL_PACKAGES = {m for m, path in package_modules().items()
                   if m.count(".") == 2 and m.startswith("lavis_ib.models.")
                   and os.path.basename(path) == "__init__.py"}


def model_package(module: str) -> str | None:
    """'instructblip' for lavis_ib.models.instructblip.*; None for shared parts and models/ itself."""
    parts = module.split(".")
    if len(parts) >= 3 and parts[1] == "models" and parts[2] not in SHARED_MODEL_PARTS \
            and f"lavis_ib.models.{parts[2]}" in _MODEL_PACKAGES:
        return parts[2]
    return None


def test_layers_import_only_downwards():
    """No module imports a higher floor; shared model parts import no model package; model
    packages import no other model package; models/ never import testing/."""
    graph = import_graph(package_modules())
    assert {model_package(m) for m in graph} >= {"instructblip", "blip2"}
    wrong = []
    for module, targets in graph.items():
        if module in SHIMS:
            continue
        for target in targets:
            if floor(target) > floor(module):
                wrong.append(f"{module} -> {target} (upward)")
            own, other = model_package(module), model_package(target)
            shared = module.startswith(tuple(f"lavis_ib.models.{p}" for p in SHARED_MODEL_PARTS))
            if other is not None and own != other and (shared or own is not None):
                wrong.append(f"{module} -> {target} (a model package from a shared part or another model)")
            if module.startswith("lavis_ib.models.") and target.startswith("lavis_ib.testing"):
                wrong.append(f"{module} -> {target} (models read prebuilt package data, never testing/)")
    assert not wrong, "\n".join(wrong)


def _module_level_imports(path: str) -> set[str]:
    tree = ast.parse(open(path, encoding="utf-8").read())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def test_commands_import_the_web_page_and_gradio_only_when_serving():
    """`lavis-ib` must start fast and work without gradio: no cli module imports web/ or
    gradio at import time (serve does it inside main)."""
    modules = package_modules()
    for module, path in modules.items():
        if module.startswith("lavis_ib.cli"):
            eager = _module_level_imports(path)
            assert not {n for n in eager if n.startswith(("lavis_ib.web", "gradio"))}, module


def test_shims_only_run_their_command():
    modules = package_modules()
    for shim in SHIMS:
        eager = _module_level_imports(modules[shim])
        assert {n for n in eager if n.startswith("lavis_ib")} <= {
            n for n in eager if n.startswith("lavis_ib.cli")}, shim

"""Where files shipped inside the package live (configs, tokenizer assets).

Shipped YAML names its files relative to the package, so one function turns them into
absolute paths that hold wherever the package is installed."""
from __future__ import annotations

import os

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def package_path(relative: str) -> str:
    """Absolute path of a file shipped inside the package (configs, assets)."""
    return relative if os.path.isabs(relative) else os.path.join(PACKAGE_ROOT, relative)


def resolve_path(path: str) -> str:
    """`path` as given if it exists, else relative to the lavis_ib package (assets)."""
    if os.path.exists(path):
        return path
    packaged = package_path(path)
    return packaged if os.path.exists(packaged) else path

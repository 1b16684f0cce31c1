"""Plain Python containers from OmegaConf nodes, without requiring omegaconf to be loaded.

Code below the config layer takes plain dicts and lists, so a model can be built from a
dict on a machine without omegaconf (the GPU bench does) and from a composed config alike."""
from __future__ import annotations

import sys
from typing import Any


def to_plain(node: Any) -> Any:
    """`node` as plain dicts/lists when it is an OmegaConf container, else unchanged.

    Works without importing omegaconf when nothing passed in came from it (the GPU bench
    builds models from plain dicts on machines that block omegaconf).
    """
    omegaconf = sys.modules.get("omegaconf")
    if omegaconf is not None and isinstance(node, (omegaconf.DictConfig, omegaconf.ListConfig)):
        return omegaconf.OmegaConf.to_container(node, resolve=True)
    return node

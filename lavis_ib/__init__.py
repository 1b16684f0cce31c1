"""lavis_ib: InstructBLIP vision-language instruction tuning; this module is the public API.

Importing the package is cheap: the registry is ready at once, and everything heavy (torch
models, datasets, metrics) loads on first use, so `import lavis_ib` costs nothing until
`load_model_and_preprocess("instructblip", "tiny_vicuna", is_eval=True)` is called."""
from __future__ import annotations

from lavis_ib.common.registry import registry

__version__ = "0.1.0"

_LAZY = {
    "load_model": "lavis_ib.models.loading",
    "load_preprocess": "lavis_ib.models.loading",
    "load_model_and_preprocess": "lavis_ib.models.loading",
    "model_zoo": "lavis_ib.models.loading",
}

__all__ = ["registry", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lavis_ib' has no attribute '{name}'")

"""Models: the InstructBLIP model, its parts, checkpoint conversion and loading.

`BaseModel` and the loaders are importable without building anything.
"""
from lavis_ib.models.base_model import BaseModel


def __getattr__(name: str):
    if name in ("load_model", "load_preprocess", "load_model_and_preprocess", "model_zoo"):
        from lavis_ib.models import loading

        return getattr(loading, name)
    if name == "InstructBLIP":
        from lavis_ib.models.instructblip import InstructBLIP

        return InstructBLIP
    raise AttributeError(f"module 'lavis_ib.models' has no attribute '{name}'")


__all__ = ["BaseModel", "InstructBLIP", "load_model", "load_preprocess", "load_model_and_preprocess", "model_zoo"]

"""Models: the model contract (`BaseModel`), shared parts (`components`), one package per
model (`instructblip`), and the LAVIS-style loaders (`loading`).

`BaseModel` and the loaders are importable without building anything; the model classes
are imported on first use, so `import lavis_ib.models` stays light.
"""
from lavis_ib.models.base_model import BaseModel


def __getattr__(name: str):
    if name in ("load_model", "load_preprocess", "load_model_and_preprocess", "model_zoo"):
        from lavis_ib.models import loading

        return getattr(loading, name)
    if name == "InstructBLIP":
        from lavis_ib.models.instructblip.model import InstructBLIP

        return InstructBLIP
    raise AttributeError(f"module 'lavis_ib.models' has no attribute '{name}'")


__all__ = ["BaseModel", "InstructBLIP", "load_model", "load_preprocess", "load_model_and_preprocess", "model_zoo"]

"""Models: the model contract (`BaseModel`), the typed `model:` node (`config`), shared parts
(`components`, `llm`, `weights`), one package per model, and the LAVIS-style loaders (`loading`).

Everything is imported on first use, so `import lavis_ib.models.config` (the pre-flight's
path) loads no torch.
"""


def __getattr__(name: str):
    if name == "BaseModel":
        from lavis_ib.models.base_model import BaseModel

        return BaseModel
    if name in ("load_model", "load_preprocess", "load_model_and_preprocess", "model_zoo"):
        from lavis_ib.models import loading

        return getattr(loading, name)
    if name == "InstructBLIP":
        from lavis_ib.models.instructblip.model import InstructBLIP

        return InstructBLIP
    raise AttributeError(f"module 'lavis_ib.models' has no attribute '{name}'")


__all__ = ["BaseModel", "InstructBLIP", "load_model", "load_preprocess", "load_model_and_preprocess", "model_zoo"]

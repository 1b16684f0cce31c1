"""InstructBLIP: the model (`model`), how it is built (`build`), its training
initialisation (`init`) and its checkpoint formats (`hf_format`, `lavis_format`, `names`).

Importing this package registers the model as "instructblip".
"""
from lavis_ib.models.instructblip.model import InstructBLIP

__all__ = ["InstructBLIP"]

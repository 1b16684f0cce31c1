"""BLIP-2 stage 1 (the Q-Former pretraining model): the model (`model`: `blip2`,
`blip2_feature_extractor`, `blip2_image_text_matching`), its losses (`losses`), the
cross-rank gathers they use (`gather`), building (`build`) and transformers' layout
(`hf_format`). Importing this package registers the models."""
from lavis_ib.models.blip2_qformer.model import Blip2Features, Blip2ImageTextMatching, Blip2Qformer

__all__ = ["Blip2Features", "Blip2ImageTextMatching", "Blip2Qformer"]

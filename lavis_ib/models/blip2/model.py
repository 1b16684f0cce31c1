"""BLIP-2 stage 2: frozen ViT -> Q-Former (queries only) -> projection -> frozen LLM.

The one import point of the three models (importing it registers them): what every Q-Former
model shares is `QFormerLLM`'s; BLIP-2's own parts are `base` (no text side of its own),
`decoder_only` (LAVIS's `blip2_opt` layout) and `t5` (LAVIS's `blip2_t5`, and `prefix_lm`)."""
from lavis_ib.models.blip2.base import Blip2
from lavis_ib.models.blip2.decoder_only import Blip2DecoderOnly, Blip2LLM, Blip2OPT
from lavis_ib.models.blip2.t5 import Blip2T5

__all__ = ["Blip2", "Blip2DecoderOnly", "Blip2LLM", "Blip2OPT", "Blip2T5"]

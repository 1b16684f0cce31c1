"""Imported on the first registry lookup: registers the built-in entries of this package.

The registry imports this one list itself, so no lookup depends on which modules a caller
happened to import first, and `import lavis_ib` stays light."""
from lavis_ib.models.instructblip import model  # noqa: F401  (registers "instructblip")
from lavis_ib.models.blip2 import model as blip2_model  # noqa: F401,E402  (registers "blip2_opt", "blip2_t5", "blip2_llm")
from lavis_ib.models.blip2_qformer import model as blip2_qformer_model  # noqa: F401,E402  (registers "blip2", "blip2_feature_extractor", "blip2_image_text_matching")

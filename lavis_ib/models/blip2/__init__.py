"""BLIP-2 stage 2: the models (`model`: `blip2_opt`, `blip2_t5`, `blip2_llm`), how they are
built (`build`) and initialised from stage 1 (`init`), their Hugging Face format
(`hf_format`) and the stage-2 pretraining objectives (`decoder_only`, `prefix_lm`, `t5`).
Importing it registers the models; their weight files are read by the shared
`lavis_ib.models.weights.blip2`, which InstructBLIP's `init_from` uses too."""
from lavis_ib.models.blip2.model import Blip2LLM, Blip2OPT, Blip2T5

__all__ = ["Blip2LLM", "Blip2OPT", "Blip2T5"]

"""BLIP-2 stage 2: frozen ViT -> Q-Former (queries only) -> projection -> frozen LLM.

The image path, the freezing decision, generation and candidate ranking are those of
every Q-Former model (`components.qformer_llm.QFormerLLM`, `components.inference`);
what is BLIP-2's own is the Q-Former without a text side of its own (`base`: the queries
never read the prompt; stage 1's text side may be carried frozen, `text_side`) and the
training layouts of stage-2 pretraining:

* `blip2_opt` and `blip2_llm` (`decoder_only`): language modelling of the caption + "\\n"
  after the soft prompts, as LAVIS's `blip2_opt` does;
* `blip2_t5` (`t5`): instruction data as LAVIS's `blip2_t5` (encoder `text_input`, decoder
  `text_output`); captions alone split into encoder prefix and decoder suffix with
  `stage2_objective: prefix_lm` (`prefix_lm`), the paper's objective.

Importing this module registers the three models.
"""
from lavis_ib.models.blip2.base import Blip2
from lavis_ib.models.blip2.decoder_only import Blip2DecoderOnly, Blip2LLM, Blip2OPT
from lavis_ib.models.blip2.t5 import Blip2T5

__all__ = ["Blip2", "Blip2DecoderOnly", "Blip2LLM", "Blip2OPT", "Blip2T5"]

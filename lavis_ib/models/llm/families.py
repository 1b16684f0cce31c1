"""LLM adapters: how soft prompts, instruction and target tokens reach each LLM family.

The InstructBLIP model hands an adapter the projected query outputs ("prefix", B x P x D)
and token ids; the adapter owns the family's token layout:

* decoder-only (LLaMA/Vicuna, OPT): one sequence [prefix ; instruction (with BOS) ; target + EOS],
  loss on the target only. Sequences are left-padded, with position ids counted from the
  first real token, so a padded batch computes what one-at-a-time calls compute; training
  computes logits only for the target positions at the end.
* encoder-decoder (FlanT5): encoder [prefix ; instruction], decoder = target + EOS.

`generate` counts `max_length`/`min_length` in generated tokens for both families and
passes the prompt as embeddings only, so the repetition penalty sees generated tokens only.
`score` ranks candidates with a shared prefix: the prompt's key/value cache (decoder-only)
or encoder output (encoder-decoder) is computed once per sample and reused by every
candidate, in chunks.
"""
from __future__ import annotations

from torch import nn

from lavis_ib.models.llm.base import LLMAdapter
from lavis_ib.models.llm.decoder_only import DecoderOnlyAdapter
from lavis_ib.models.llm.encoder_decoder import EncoderDecoderAdapter

__all__ = ["LLMAdapter", "DecoderOnlyAdapter", "EncoderDecoderAdapter", "make_adapter"]


def make_adapter(llm: nn.Module, tokenizer, **kwargs) -> LLMAdapter:
    """The adapter of `llm`'s family."""
    cls = EncoderDecoderAdapter if llm.config.is_encoder_decoder else DecoderOnlyAdapter
    return cls(llm, tokenizer, **kwargs)

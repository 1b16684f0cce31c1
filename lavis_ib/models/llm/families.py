"""LLM adapters: how soft prompts, instruction and target tokens reach each LLM family.

The InstructBLIP model hands an adapter the projected query outputs ("prefix", B x P x D)
and token ids; the adapter owns the family's token layout:

* decoder-only (LLaMA/Vicuna, OPT, Qwen2, Mistral, Phi-3, Gemma-2, any causal LM): one
  sequence [prefix ; instruction (with BOS when the tokenizer adds one) ; target + EOS],
  loss on the target only. Sequences are left-padded, with position ids counted from the
  first real token, so a padded batch computes what one-at-a-time calls compute; training
  computes logits only for the target positions at the end.
* encoder-decoder (FlanT5): encoder [prefix ; instruction], decoder = target + EOS.

`generate` counts `max_length`/`min_length` in generated tokens for both families and
passes the prompt as embeddings only, so the repetition penalty sees generated tokens only.
`score` ranks candidates with a shared prefix: the prompt's key/value cache (decoder-only)
or encoder output (encoder-decoder) is computed once per sample and reused by every
candidate, in chunks.

What differs between decoder-only families beyond the tokenizer is declared here once:
the attention kernel a family needs (`REQUIRED_ATTENTION`, applied by `make_adapter`) and
the sliding-window layout of its attention (`attention_windows`), which the trie scorer
must reproduce in the masks it builds itself (both in `family_traits`).
"""
from __future__ import annotations

from torch import nn

from lavis_ib.models.llm.base import LLMAdapter
from lavis_ib.models.llm.decoder_only import DecoderOnlyAdapter
from lavis_ib.models.llm.encoder_decoder import EncoderDecoderAdapter
from lavis_ib.models.llm.family_traits import REQUIRED_ATTENTION, attention_windows, prepare_llm

__all__ = ["LLMAdapter", "DecoderOnlyAdapter", "EncoderDecoderAdapter", "make_adapter",
           "REQUIRED_ATTENTION", "attention_windows", "prepare_llm"]


def make_adapter(llm: nn.Module, tokenizer, **kwargs) -> LLMAdapter:
    """The adapter of `llm`'s family (the LLM put on the attention kernel it needs)."""
    prepare_llm(llm)
    cls = EncoderDecoderAdapter if llm.config.is_encoder_decoder else DecoderOnlyAdapter
    return cls(llm, tokenizer, **kwargs)

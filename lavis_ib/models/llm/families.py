"""LLM adapters: how soft prompts, instruction and target tokens reach each LLM family.

A model hands an adapter its soft prompts and token ids and never sees a family's token
layout, so one model class serves decoder-only and encoder-decoder LLMs; `make_adapter`
picks the adapter (layouts: `LLMAdapter`; per-family kernels and windows: `family_traits`)."""
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

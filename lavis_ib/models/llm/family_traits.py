"""What differs between decoder-only LLM families beyond their tokenizer, declared once:
the attention kernel a family must run with and the sliding-window layout of its attention
(which the trie scorer reproduces in the masks it builds itself). A leaf module, so the
adapters and `families` can both read it.
"""
from __future__ import annotations

import logging

from torch import nn

logger = logging.getLogger(__name__)

#: transformers `model_type` -> (the attention kernel it must run with, why). Gemma-2
#: soft-caps its attention logits (tanh(s / cap) * cap); the eager kernel computes that
#: with any additive mask (transformers 5 refuses SDPA for Gemma-2; flash kernels take no
#: 4-D mask, which the trie scorer passes). A config saved for another kernel is put back.
REQUIRED_ATTENTION = {
    "gemma2": ("eager", "Gemma-2's soft-capped attention with the 4-D masks ranking uses is "
                        "computed by the eager kernel only"),
}


def prepare_llm(llm: nn.Module) -> None:
    """Put `llm` on the attention kernel its family requires (logged when it changes)."""
    model_type = llm.config.get_text_config().model_type
    required = REQUIRED_ATTENTION.get(model_type)
    if required is None:
        return
    kernel, why = required
    current = llm.config._attn_implementation
    if current != kernel:
        llm.set_attn_implementation(kernel)
        logger.warning("LLM %s: attention kernel %s -> %s (%s)", model_type, current, kernel, why)


def attention_windows(config) -> tuple[int | None, bool]:
    """(sliding window, per_layer_type) of a decoder-only LLM config.

    (None, False): every layer attends to the whole past. (w, False): every layer attends
    to the last w positions (Mistral, Phi-3 with `sliding_window` set). (w, True): layers
    differ (`config.layer_types` holds "sliding_attention" and "full_attention", e.g.
    Gemma-2, Qwen2 with `use_sliding_window`); such models accept one mask per layer type
    (`{"full_attention": ..., "sliding_attention": ...}`).
    """
    config = config.get_text_config()
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        if "sliding_attention" in layer_types and window:
            return int(window), "full_attention" in layer_types
        return None, False
    return (int(window), False) if window else (None, False)

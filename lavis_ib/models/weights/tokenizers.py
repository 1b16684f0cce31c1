"""Loading tokenizers and checking them against the embedding tables they index.

A leaf module: every model package and checkpoint format reads its tokenizers through it.
"""
from __future__ import annotations

from lavis_ib.common.errors import LavisIbError
from lavis_ib.common.paths import resolve_path
from lavis_ib.models.weights.hub import resolve_dir


def load_tokenizer(path: str, what: str):
    """AutoTokenizer from a local directory (relative paths: inside the `lavis_ib` package
    first) or a hub id available offline."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_dir(resolve_path(path), what))


def qformer_tokenizer_from(path: str):
    """The Q-Former's BERT tokenizer, with `[DEC]` as bos and left truncation."""
    tok = load_tokenizer(path, "qformer_tokenizer")
    if tok.bos_token is None:
        tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.truncation_side = "left"
    return tok


def caption_tokenizer_from(path: str):
    """BLIP-2 stage 1's BERT tokenizer: `[DEC]` as bos, captions cut on the right (LAVIS's
    `init_tokenizer` default; InstructBLIP's instructions are cut on the left)."""
    tok = load_tokenizer(path, "tokenizer")
    if tok.bos_token is None:
        tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.truncation_side = "right"
    return tok


def check_vocab(model) -> None:
    """The tokenizers must fit the embedding tables they index (a tokenizer from another
    checkpoint would index past the table, or silently mean other words)."""
    n_llm = model.llm.get_input_embeddings().weight.shape[0]
    if len(model.llm_tokenizer) > n_llm:
        raise LavisIbError(f"the LLM tokenizer has {len(model.llm_tokenizer)} tokens but the "
                           f"LLM embeds {n_llm}; use the tokenizer saved with the checkpoint.")
    n_q = model.qformer.word_embeddings.weight.shape[0]
    if len(model.qformer_tokenizer) > n_q:
        raise LavisIbError(f"the Q-Former tokenizer has {len(model.qformer_tokenizer)} tokens but "
                           f"the Q-Former embeds {n_q}; use the checkpoint's qformer_tokenizer.")

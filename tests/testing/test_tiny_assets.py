"""The tokenizers shipped in lavis_ib/assets are the ones tiny_assets.py builds."""
from __future__ import annotations

import pytest

from lavis_ib.testing import tiny_assets

TEXTS = ["Hello, world?", "OCR tokens: a, b. Question: what is 2+2? Short answer:", "  spaced  out "]


@pytest.mark.parametrize("kind", ["llama", "t5", "bert", "opt"])
def test_shipped_tokenizer_matches_builder(kind):
    from transformers import AutoTokenizer

    shipped = AutoTokenizer.from_pretrained(tiny_assets.asset_path(kind))
    built = tiny_assets.BUILDERS[kind]()
    assert shipped.get_vocab() == built.get_vocab()
    assert (shipped.bos_token, shipped.eos_token, shipped.pad_token) == (
        built.bos_token, built.eos_token, built.pad_token)
    for text in TEXTS:
        assert shipped(text).input_ids == built(text).input_ids
        assert shipped.decode(shipped(text).input_ids, skip_special_tokens=True).strip() != ""


def test_tiny_types_fit_their_tokenizers(tiny_vicuna, tiny_flant5, tiny_opt):
    assert tiny_vicuna.llm_tokenizer.bos_token_id == tiny_vicuna.llm_tokenizer("x").input_ids[0]
    assert tiny_flant5.llm_tokenizer("x").input_ids[-1] == tiny_flant5.llm_tokenizer.eos_token_id
    for model in (tiny_vicuna, tiny_flant5, tiny_opt):
        assert len(model.llm_tokenizer) <= model.llm.get_input_embeddings().weight.shape[0]
        assert model.qformer_tokenizer.bos_token == "[DEC]"
        assert len(model.qformer_tokenizer) <= model.qformer.word_embeddings.weight.shape[0]


def test_tiny_opt_tokenizer_is_byte_level_bpe_like_opts():
    """OPT's layout: `</s>` (id 2) is prepended as bos and is also eos; `<pad>` is 1; every
    byte has a symbol (no unknown text) and merges make multi-byte tokens."""
    tok = tiny_assets.tiny_opt_tokenizer()
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (2, 2, 1)
    text = "Ünïcode, emoji \U0001F600 and the cat"
    ids = tok(text).input_ids
    assert ids[0] == 2 and tok.decode(ids, skip_special_tokens=True) == text
    assert len(tok(" the", add_special_tokens=False).input_ids) == 2   # "\u0120t" + "he"

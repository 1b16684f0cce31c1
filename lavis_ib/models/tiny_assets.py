"""Tiny tokenizers shipped as package data (`lavis_ib/assets/`), built offline in code.

`tiny_vicuna` and `tiny_flant5` must work without any download, so their tokenizers are
made with transformers' own tokenizer classes from an in-code character vocabulary and
saved under `lavis_ib/assets/`. Rebuild them with `python -m lavis_ib.models.tiny_assets`
(the test suite checks the shipped files still match this code).
"""
from __future__ import annotations

import os
import string
import sys

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
NAMES = {"llama": "tiny_llama_tokenizer", "t5": "tiny_t5_tokenizer", "bert": "tiny_bert_tokenizer"}
_CHARS = list(string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation)


def tiny_llama_tokenizer():
    """A LLaMA (SentencePiece-style BPE) tokenizer over single characters; adds BOS like
    Vicuna's and has a `[PAD]` token like LAVIS's Vicuna setup."""
    from transformers import LlamaTokenizer

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "[PAD]": 3}
    for piece in ["\u2581"] + _CHARS + ["\u2581" + c for c in _CHARS]:
        vocab.setdefault(piece, len(vocab))
    return LlamaTokenizer(vocab=vocab, merges=[], add_bos_token=True, add_eos_token=False,
                          pad_token="[PAD]")


def tiny_t5_tokenizer():
    """A T5 (Unigram) tokenizer over single characters; appends EOS like FlanT5's."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(c, -2.0) for c in _CHARS] + [("\u2581" + c, -2.5) for c in _CHARS]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def tiny_bert_tokenizer():
    """An uncased WordPiece tokenizer with the Q-Former's `[DEC]` bos token."""
    from transformers import BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + _CHARS + ["##" + c for c in _CHARS]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)
    tok.add_special_tokens({"bos_token": "[DEC]"})
    return tok


BUILDERS = {"llama": tiny_llama_tokenizer, "t5": tiny_t5_tokenizer, "bert": tiny_bert_tokenizer}


def asset_path(kind: str) -> str:
    """Directory of the shipped tiny tokenizer `kind` ("llama", "t5", "bert")."""
    return os.path.join(ASSETS, NAMES[kind])


def write_assets(root: str = ASSETS) -> list[str]:
    """Save the three tiny tokenizers under `root`."""
    written = []
    for kind, build in BUILDERS.items():
        path = os.path.join(root, NAMES[kind])
        build().save_pretrained(path)
        written.append(path)
    return written


if __name__ == "__main__":
    print("\n".join(write_assets(sys.argv[1] if len(sys.argv) > 1 else ASSETS)))

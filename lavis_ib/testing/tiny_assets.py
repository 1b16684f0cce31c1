"""Tiny tokenizers shipped as package data (`lavis_ib/assets/`), built offline in code.

`tiny_vicuna`, `tiny_flant5` and `tiny_opt` must work without any download, so their
tokenizers are made with transformers' own tokenizer classes from an in-code vocabulary
(single characters; all 256 bytes for the byte-level one) and saved under
`lavis_ib/assets/`. Rebuild them with `python -m lavis_ib.testing.tiny_assets`
(the test suite checks the shipped files still match this code).
"""
from __future__ import annotations

import os
import string
import sys

from lavis_ib.common.paths import package_path

ASSETS = package_path("assets")
NAMES = {"llama": "tiny_llama_tokenizer", "t5": "tiny_t5_tokenizer", "bert": "tiny_bert_tokenizer",
         "opt": "tiny_opt_tokenizer"}
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


def tiny_opt_tokenizer():
    """A GPT-2-style byte-level BPE tokenizer laid out like OPT's: ids 0-3 are `<s>`,
    `<pad>`, `</s>`, `<unk>`; `</s>` is bos, eos and unk, and is prepended to every text
    as OPT's tokenizer does. The vocabulary is the 256 byte symbols plus a few merges
    (space + letter, common pairs), so any text encodes and decodes losslessly."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import GPT2Tokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for symbol in sorted(ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    space = "\u0120"   # the byte-level symbol of " "
    pairs = [(space, c) for c in string.ascii_lowercase] + [("t", "h"), ("h", "e"), ("i", "n")]
    for left, right in pairs:
        vocab[left + right] = len(vocab)
    return GPT2Tokenizer(vocab=vocab, merges=pairs, bos_token="</s>", eos_token="</s>",
                         unk_token="</s>", pad_token="<pad>", add_bos_token=True)


BUILDERS = {"llama": tiny_llama_tokenizer, "t5": tiny_t5_tokenizer, "bert": tiny_bert_tokenizer,
            "opt": tiny_opt_tokenizer}


def asset_path(kind: str) -> str:
    """Directory of the shipped tiny tokenizer `kind` ("llama", "t5", "bert", "opt")."""
    return os.path.join(ASSETS, NAMES[kind])


def write_assets(root: str = ASSETS) -> list[str]:
    """Save the tiny tokenizers under `root`."""
    written = []
    for kind, build in BUILDERS.items():
        path = os.path.join(root, NAMES[kind])
        build().save_pretrained(path)
        written.append(path)
    return written


if __name__ == "__main__":
    print("\n".join(write_assets(sys.argv[1] if len(sys.argv) > 1 else ASSETS)))

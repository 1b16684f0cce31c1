"""Tiny tokenizers shipped as package data (`lavis_ib/assets/`), built offline in code.

The tiny model types of every LLM family (and the Q-Former's BERT) must work without any
download, so their tokenizers are built here and shipped (`write_assets`)."""
from __future__ import annotations

import os
import string
import sys

from lavis_ib.common.paths import package_path

ASSETS = package_path("assets")
NAMES = {"llama": "tiny_llama_tokenizer", "t5": "tiny_t5_tokenizer", "bert": "tiny_bert_tokenizer",
         "opt": "tiny_opt_tokenizer", "llama3": "tiny_llama3_tokenizer",
         "qwen2": "tiny_qwen2_tokenizer", "mistral": "tiny_mistral_tokenizer",
         "phi3": "tiny_phi3_tokenizer", "gemma2": "tiny_gemma2_tokenizer"}
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


def _byte_level_vocab(first: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """`first` tokens, the 256 byte symbols, and merges of space + letter and a few pairs."""
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {token: i for i, token in enumerate(first)}
    for symbol in sorted(ByteLevel.alphabet()):
        vocab.setdefault(symbol, len(vocab))
    space = "\u0120"   # the byte-level symbol of " "
    pairs = [(space, c) for c in string.ascii_lowercase] + [("t", "h"), ("h", "e"), ("i", "n")]
    for left, right in pairs:
        vocab[left + right] = len(vocab)
    return vocab, pairs


def _sentencepiece_vocab(first: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """`first` tokens, the 256 byte-fallback pieces `<0x00>`..`<0xFF>` (so a newline or
    any other character still encodes), "\u2581", the characters, and "\u2581" + character
    as merges (one token per word-initial character, as SentencePiece vocabularies have)."""
    vocab = {token: i for i, token in enumerate(first)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for piece in ["\u2581"] + _CHARS:
        vocab.setdefault(piece, len(vocab))
    pairs = [("\u2581", c) for c in _CHARS]
    for left, right in pairs:
        vocab[left + right] = len(vocab)
    return vocab, pairs


def tiny_llama3_tokenizer():
    """LLaMA-3's layout: byte-level BPE (tiktoken-style), `<|begin_of_text|>` prepended to
    every text, `<|end_of_text|>` as eos, `<|eot_id|>` among the special tokens after the
    regular vocabulary, and no pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab, pairs = _byte_level_vocab([])
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eot_id|>"]
    for token in specials:
        vocab[token] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=pairs))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    bos = specials[0]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos,
                                  eos_token="<|end_of_text|>")
    tok.add_special_tokens({"additional_special_tokens": specials[2:]})
    return tok


def tiny_qwen2_tokenizer():
    """Qwen2's layout: byte-level BPE, no BOS, `<|endoftext|>` as eos, pad and unk, and
    the chat tokens `<|im_start|>` / `<|im_end|>`, all after the regular vocabulary."""
    from transformers import Qwen2Tokenizer

    vocab, pairs = _byte_level_vocab([])
    for token in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        vocab[token] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=pairs)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    return tok


def tiny_mistral_tokenizer():
    """Mistral's layout: SentencePiece-style BPE with byte fallback, `<unk>` `<s>` `</s>`
    as ids 0-2, BOS prepended, no pad token."""
    from transformers import LlamaTokenizer

    vocab, pairs = _sentencepiece_vocab(["<unk>", "<s>", "</s>"])
    return LlamaTokenizer(vocab=vocab, merges=pairs, add_bos_token=True, add_eos_token=False)


def tiny_phi3_tokenizer():
    """Phi-3's layout: the LLaMA-2 SentencePiece vocabulary (`<unk>` `<s>` `</s>` as ids
    0-2, byte fallback) with `<|endoftext|>` as eos and pad and the chat tokens
    (`<|user|>`, `<|assistant|>`, `<|end|>`) added after it. This stand-in prepends no
    BOS, so the family covers a SentencePiece tokenizer without one."""
    from transformers import LlamaTokenizer

    vocab, pairs = _sentencepiece_vocab(["<unk>", "<s>", "</s>"])
    for token in ("<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"):
        vocab[token] = len(vocab)
    tok = LlamaTokenizer(vocab=vocab, merges=pairs, add_bos_token=False, add_eos_token=False,
                         eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>", "<|end|>"]})
    return tok


def tiny_gemma2_tokenizer():
    """Gemma's layout: `<pad>` `<eos>` `<bos>` `<unk>` `<mask>` as ids 0-4, BOS prepended,
    SentencePiece-style BPE with byte fallback."""
    from transformers import GemmaTokenizer

    vocab, pairs = _sentencepiece_vocab(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"])
    return GemmaTokenizer(vocab=vocab, merges=pairs, add_bos_token=True, add_eos_token=False)


BUILDERS = {"llama": tiny_llama_tokenizer, "t5": tiny_t5_tokenizer, "bert": tiny_bert_tokenizer,
            "opt": tiny_opt_tokenizer, "llama3": tiny_llama3_tokenizer,
            "qwen2": tiny_qwen2_tokenizer, "mistral": tiny_mistral_tokenizer,
            "phi3": tiny_phi3_tokenizer, "gemma2": tiny_gemma2_tokenizer}


def asset_path(kind: str) -> str:
    """Directory of the shipped tiny tokenizer `kind` (a key of `NAMES`)."""
    return os.path.join(ASSETS, NAMES[kind])


def write_assets(root: str = ASSETS) -> list[str]:
    """Save the tiny tokenizers under `root`.

    Each is made with transformers' own tokenizer class from an in-code vocabulary (single
    characters, or all 256 bytes for the byte-level ones) laid out like its family's
    (special tokens, their ids' order, whether a BOS is prepended). Rebuild the shipped
    files with `python -m lavis_ib.testing.tiny_assets` (the test suite checks they still
    match this code).
    """
    written = []
    for kind, build in BUILDERS.items():
        path = os.path.join(root, NAMES[kind])
        build().save_pretrained(path)
        written.append(path)
    return written


if __name__ == "__main__":
    print("\n".join(write_assets(sys.argv[1] if len(sys.argv) > 1 else ASSETS)))

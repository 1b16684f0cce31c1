"""BLIP-2's stage-2 prefix language modelling for encoder-decoder LLMs (FlanT5).

The paper splits each caption into an encoder prefix and a decoder target, but LAVIS's code
has no split (`blip2_t5` reads a `text_output` none of its datasets writes, LAVIS #181);
this module supplies one, by the rule a maintainer gives in LAVIS #139 (`split_captions`)."""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

#: keeps the split's draws apart from any other use of a sample's seed
STREAM = 0x70726566   # "pref"
SEED_KEY = "sample_seed"


@dataclass
class Split:
    """The prefixes and suffixes of a batch of captions, and what needs counting."""

    prefixes: list[str] = field(default_factory=list)
    suffixes: list[str] = field(default_factory=list)
    unsplit: int = 0          # captions of fewer than two words
    text_seeded: int = 0      # samples without `sample_seed`


def split_point(num_words: int, seed: int) -> int:
    """k in 1..num_words // 2 (0 for fewer than two words), drawn from the sample's seed."""
    if num_words < 2:
        return 0
    rng = np.random.default_rng([STREAM, int(seed) % 2 ** 64])
    return int(rng.integers(1, num_words // 2 + 1))


def caption_seed(caption: str) -> int:
    return zlib.crc32(caption.encode("utf-8"))


def split_captions(captions: Sequence[str], seeds: Sequence[Any] | None) -> Split:
    """Split each caption at its drawn word.

    The paper splits each caption in two: the prefix goes to the LLM's encoder after the
    soft prompts, the suffix is the decoder's target. A maintainer gives the rule in LAVIS
    #139: the split point is drawn from position 1 to the midpoint of the sequence.

    Here the unit is the word (whitespace-separated): a caption of n >= 2 words is split
    after k words, k uniform in 1..n // 2, so the prefix is never empty and never longer
    than the suffix; a one-word caption is not split (empty prefix, the word as the target;
    counted). Words rather than tokens keep both halves real text, tokenized as any prompt
    and target.

    k is drawn from a generator of the sample alone: numpy's `default_rng((STREAM, seed))`
    with the sample's `sample_seed` (an int a dataset derives from its seed, epoch and
    index), so a resumed run and any split of the batch over processes draw the same k. A
    sample without `sample_seed` is seeded by the CRC-32 of its caption (the same caption
    then splits the same way every epoch); such samples are counted and logged.
    """
    out = Split()
    for i, caption in enumerate(captions):
        seed = None if seeds is None else seeds[i]
        if seed is None:
            seed = caption_seed(caption)
            out.text_seeded += 1
        words = caption.split()
        k = split_point(len(words), int(seed))
        out.unsplit += k == 0
        out.prefixes.append(" ".join(words[:k]))
        out.suffixes.append(" ".join(words[k:]))
    return out

"""Balanced dataset mixing: which dataset each optimizer step draws from, and which samples.

InstructBLIP (Sec. 2.4) mixes the held-in training sets with probability
p_d = sqrt(S_d) / sum_i sqrt(S_i) (S = number of training samples), then adjusts some
datasets by hand. Here p_d is proportional to sqrt(S_d) x sample_ratio_d, or to
S_d x sample_ratio_d when balanced sampling is off (the Table 2 ablation). The hand
adjustments are `datasets.<name>.sample_ratio` in the project files (OKVQA up, A-OKVQA
down; their values and rationale: docs/protocol.md), 1.0 by default.

Everything is a pure function of the seed, so any number of ranks sees the same sequence:

- `Mixer.choose(step)`: the dataset of optimizer step `step`, drawn from a generator seeded by
  (seed, step) only. It needs no state, so resuming at step s needs no replay.
- `IndexStream`: a dataset's sample order, a permutation seeded by (seed, dataset name, pass),
  consumed in order; indices are emitted as ``pass * size + i`` (the dataset contract: an
  index >= len encodes the epoch, which drives the per-epoch template draw). Its state is
  (pass, position); `advance` moves it without building permutations.

Numpy's `SeedSequence` mixes the seed parts; dataset names enter through a fixed hash
(blake2b), never Python's `hash`, which is salted per process.
"""
from __future__ import annotations

import hashlib
import math
from typing import Mapping

import numpy as np

from lavis_ib.common.errors import ConfigError, did_you_mean

# Distinct tags keep the choice generator and the permutation generators independent even
# when their other seed parts coincide.
_CHOICE_TAG = 0x6D6978  # "mix"
_PERM_TAG = 0x7065726D  # "perm"
_U64 = 2 ** 64


def name_key(name: str) -> int:
    """A stable 64-bit integer for a dataset name (the same in every process)."""
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little")


def mixing_weights(sizes: Mapping[str, int], sample_ratios: Mapping[str, float] | None = None,
                   balanced: bool = True) -> dict[str, float]:
    """Sampling probability of each dataset.

    Args:
        sizes: {name: number of training samples}.
        sample_ratios: {name: hand adjustment}; names left out get 1.0.
        balanced: p ~ sqrt(size) x ratio when True, p ~ size x ratio when False.

    Returns:
        {name: probability}, in sorted name order, summing to 1.

    Raises:
        ConfigError: no datasets, a ratio for an unknown dataset, a negative or non-finite
            ratio, a dataset without samples, or every weight zero.
    """
    if not sizes:
        raise ConfigError("No training datasets to mix: list at least one under `datasets:`.")
    ratios = dict(sample_ratios or {})
    for name in ratios:
        if name not in sizes:
            raise ConfigError(f"sample_ratio given for '{name}', which is not a training dataset."
                              f"{did_you_mean(name, sizes)} Training datasets: {', '.join(sorted(sizes))}.")
    raw = {}
    for name in sorted(sizes):
        size, ratio = sizes[name], ratios.get(name, 1.0)
        if not isinstance(size, (int, np.integer)) or size <= 0:
            raise ConfigError(f"Dataset '{name}' has {size!r} training samples; it needs at least "
                              f"one to be mixed (check its annotation file or remove it).")
        if not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio < 0:
            raise ConfigError(f"datasets.{name}.sample_ratio must be a finite number >= 0, got {ratio!r}.")
        raw[name] = (math.sqrt(size) if balanced else float(size)) * float(ratio)
    total = sum(raw.values())
    if total <= 0:
        raise ConfigError("Every dataset has sample_ratio 0: give at least one a positive ratio.")
    return {name: w / total for name, w in raw.items()}


class Mixer:
    """The dataset chosen at each optimizer step; stateless and identical on every rank.

    Args:
        sizes: {name: number of training samples}.
        sample_ratios: {name: hand adjustment} (`datasets.<name>.sample_ratio`; the
            shipped values and their rationale: docs/protocol.md).
        balanced: sqrt-size weighting (True) or size-proportional (False).
        seed: run seed; with the step it is the only input of the draw.

    Example:
        >>> mixer = Mixer({"a": 100, "b": 400}, seed=0)
        >>> mixer.choose(0) in ("a", "b")
        True
    """

    def __init__(self, sizes: Mapping[str, int], sample_ratios: Mapping[str, float] | None = None,
                 balanced: bool = True, seed: int = 0) -> None:
        self.probabilities = mixing_weights(sizes, sample_ratios, balanced)
        self.names = list(self.probabilities)
        self.seed = int(seed) % _U64
        self._cdf = np.cumsum([self.probabilities[n] for n in self.names])
        # A draw u in [0, 1) past the last cumulative value (float rounding) goes to the last
        # dataset that can be chosen at all, never to a zero-weight one.
        self._last = max(i for i, n in enumerate(self.names) if self.probabilities[n] > 0)

    def choose(self, step: int) -> str:
        """Name of the dataset that optimizer step `step` draws its global batch from."""
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([_CHOICE_TAG, self.seed, int(step)])))
        index = int(np.searchsorted(self._cdf, rng.random(), side="right"))
        return self.names[min(index, self._last)]


class IndexStream:
    """One dataset's sample indices, pass after pass, each pass a seeded permutation.

    Args:
        name: dataset name (part of the permutation seed).
        size: number of samples per pass.
        seed: run seed.
        pass_: pass to start in (from a saved state).
        pos: position inside that pass.
    """

    def __init__(self, name: str, size: int, seed: int, pass_: int = 0, pos: int = 0) -> None:
        if size <= 0:
            raise ConfigError(f"Dataset '{name}' has no training samples to stream.")
        self.name, self.size, self.seed = name, int(size), int(seed) % _U64
        self.pass_, self.pos = int(pass_), int(pos)
        self._perm: np.ndarray | None = None
        self._perm_pass = -1

    def permutation(self, pass_: int) -> np.ndarray:
        """The sample order of pass `pass_` (depends on seed, name and pass only)."""
        seq = np.random.SeedSequence([_PERM_TAG, self.seed, name_key(self.name), int(pass_)])
        return np.random.Generator(np.random.PCG64(seq)).permutation(self.size)

    def take(self, n: int) -> list[int]:
        """The next `n` indices as ``pass * size + i``, crossing passes as needed."""
        out: list[int] = []
        while len(out) < n:
            if self._perm_pass != self.pass_:
                self._perm, self._perm_pass = self.permutation(self.pass_), self.pass_
            k = min(n - len(out), self.size - self.pos)
            chunk = self._perm[self.pos:self.pos + k] + self.pass_ * self.size
            out.extend(chunk.tolist())
            self.advance(k)
        return out

    def advance(self, n: int) -> None:
        """Skip `n` indices without building any permutation (state bookkeeping, resume)."""
        total = self.pos + int(n)
        self.pass_ += total // self.size
        self.pos = total % self.size

    def state_dict(self) -> dict[str, int]:
        return {"pass": self.pass_, "pos": self.pos, "size": self.size}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        if int(state.get("size", self.size)) != self.size:
            raise ConfigError(f"Cannot resume dataset '{self.name}': the checkpoint's stream was over "
                              f"{state['size']} samples, the dataset now has {self.size}. Resume with "
                              f"the same data, or start a new run.")
        self.pass_, self.pos = int(state["pass"]), int(state["pos"])

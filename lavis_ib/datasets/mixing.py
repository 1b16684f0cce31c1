"""Balanced dataset mixing: which dataset fills each slot of a step's global batch, and which samples.

InstructBLIP's square-root-of-size mixing (`mixing_weights`), made a pure function of the
seed and step (`Mixer`, `MixPlan`, `IndexStream`), so any number of ranks sees the same
sequence and a resume needs no replay."""
from __future__ import annotations

import hashlib
import logging
import math
from typing import Any, Mapping

import numpy as np
import torch

from lavis_ib.common.errors import ConfigError, DataError, did_you_mean

MIX_UNITS = ("micro_batch", "sample", "step")
logger = logging.getLogger(__name__)

# Distinct tags keep the choice generator and the permutation generators independent even
# when their other seed parts coincide.
_CHOICE_TAG = 0x6D6978  # "mix"
_PERM_TAG = 0x7065726D  # "perm"
_U64 = 2 ** 64


def name_key(name: str) -> int:
    """A stable 64-bit integer for a dataset name (the same in every process).

    A fixed hash (blake2b), never Python's `hash`, which is salted per process; numpy's
    `SeedSequence` then mixes it with the other seed parts.
    """
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little")


def check_sample_ratio(name: str, ratio: Any) -> float:
    """`datasets.<name>.sample_ratio` as a float: a finite number >= 0 (0: evaluation only).

    `sample_ratio: 0` is the one spelling of an evaluation-only dataset in a training
    project: never drawn, still validated; the pre-flight applies this same rule.

    Raises:
        ConfigError: a negative, non-finite or non-numeric ratio (booleans included).
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.integer, np.floating)) \
            or not math.isfinite(ratio) or ratio < 0:
        raise ConfigError(f"datasets.{name}.sample_ratio must be a finite number >= 0 "
                          f"(0: evaluation only); got {ratio!r}.")
    return float(ratio)


def mixing_weights(sizes: Mapping[str, int], sample_ratios: Mapping[str, float] | None = None,
                   balanced: bool = True) -> dict[str, float]:
    """Sampling probability of each dataset.

    InstructBLIP (Sec. 2.4) mixes the held-in training sets with probability
    p_d = sqrt(S_d) / sum_i sqrt(S_i) (S = number of training samples), then adjusts some
    datasets by hand. Here p_d is proportional to sqrt(S_d) x sample_ratio_d, or to
    S_d x sample_ratio_d when balanced sampling is off (the Table 2 ablation). The hand
    adjustments are `datasets.<name>.sample_ratio` in the project files (OKVQA up, A-OKVQA
    down; their values and rationale: docs/protocol.md), 1.0 by default.

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
        raw[name] = (math.sqrt(size) if balanced else float(size)) * check_sample_ratio(name, ratio)
    total = sum(raw.values())
    if total <= 0:
        raise ConfigError("Every dataset has sample_ratio 0: give at least one a positive ratio.")
    return {name: w / total for name, w in raw.items()}


class Mixer:
    """The dataset chosen at each optimizer step; stateless and identical on every rank.

    `draws(step, n)` gives the first `n` dataset draws of optimizer step `step`, from a
    generator seeded by (seed, step) only; draw k does not depend on n. `choose(step)` is
    draw 0. They need no state, so resuming at step s needs no replay.

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
        for name in (n for n in self.names if self.probabilities[n] == 0):
            logger.info("datasets.%s: sample_ratio 0, never drawn for training (evaluated only).", name)
        self.seed = int(seed) % _U64
        self._cdf = np.cumsum([self.probabilities[n] for n in self.names])
        # A draw u in [0, 1) past the last cumulative value (float rounding) goes to the last
        # dataset that can be chosen at all, never to a zero-weight one.
        self._last = max(i for i, n in enumerate(self.names) if self.probabilities[n] > 0)

    def choose(self, step: int) -> str:
        """Name of the dataset that optimizer step `step` draws first (its whole global
        batch when `run.mix_unit` is ``step``)."""
        return self.draws(step, 1)[0]

    def draws(self, step: int, n: int) -> list[str]:
        """The first `n` draws of step `step`; draw k is a function of (seed, step, k) alone."""
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([_CHOICE_TAG, self.seed, int(step)])))
        index = np.searchsorted(self._cdf, rng.random(int(n)), side="right")
        return [self.names[min(int(i), self._last)] for i in index]


class MixPlan:
    """The dataset and sample of every slot of each step's global batch (`run.mix_unit`).

    ``micro_batch``: draw g fills the g-th group of `group_size` = batch_size_train
    consecutive slots (LAVIS's one draw per rank per micro-batch, the same on any world size
    and accumulation); ``sample``: draw j fills slot j; ``step``: draw 0 fills the whole
    step. Each dataset's slots take the next indices of its stream in slot order.

    Args:
        mixer: the seeded dataset draws.
        global_batch_size: slots per step.
        unit: ``micro_batch`` | ``sample`` | ``step`` (above).
        group_size: slots per draw for ``micro_batch`` (run.batch_size_train, not the
            micro-batch a world size derives, so the plan is the same on any layout).

    Raises:
        ConfigError: an unknown unit or a group size that is not a positive integer.
    """

    def __init__(self, mixer: Mixer, global_batch_size: int, unit: str = "micro_batch",
                 group_size: int = 1) -> None:
        if unit not in MIX_UNITS:
            raise ConfigError(f"run.mix_unit: '{unit}' is not one of {', '.join(MIX_UNITS)}.")
        if not isinstance(group_size, (int, np.integer)) or group_size < 1:
            raise ConfigError(f"run.batch_size_train (the mixing group) must be a positive integer, got {group_size!r}.")
        self.mixer, self.global_batch_size = mixer, int(global_batch_size)
        self.unit, self.group_size = unit, int(group_size)

    def slot_names(self, step: int) -> list[str]:
        """The dataset of each of the `global_batch_size` slots of step `step`."""
        size = {"step": self.global_batch_size, "sample": 1}.get(self.unit, self.group_size)
        names = self.mixer.draws(step, -(-self.global_batch_size // size))
        return [names[j // size] for j in range(self.global_batch_size)]

    @staticmethod
    def counts(names: list[str]) -> dict[str, int]:
        """{dataset: slots} of `names`, datasets in order of first slot."""
        return {n: names.count(n) for n in dict.fromkeys(names)}

    def rank_cuts(self, micro: int, rank: int, world_size: int) -> list[slice]:
        """The slots of each of this rank's micro-batches: micro-step a, rank r gets the
        (a * world_size + r)-th run of `micro` slots."""
        if self.unit == "micro_batch" and self.group_size % micro:
            logger.info("run.mix_unit=micro_batch: micro-batches of %d straddle mixing groups of %d "
                        "samples; one holding two datasets is collated per dataset and concatenated.",
                        micro, self.group_size)
        accum = self.global_batch_size // (micro * world_size)
        return [slice((a * world_size + rank) * micro, (a * world_size + rank + 1) * micro) for a in range(accum)]

    def state_dict(self) -> dict[str, Any]:
        return {"mix_unit": self.unit, "mix_group": self.group_size}

    def check_state(self, state: Mapping[str, Any]) -> None:
        """A checkpoint's data order continues only under the same unit and group (states
        saved before `run.mix_unit` existed were made with ``step``).

        Raises:
            ConfigError: naming the checkpoint's setting and how to keep it.
        """
        if "streams" not in state:
            return  # a bare step is replayed under this run's plan
        unit = state.get("mix_unit", "step")
        group = int(state.get("mix_group", self.group_size))
        if unit != self.unit or (unit == "micro_batch" and group != self.group_size):
            raise ConfigError(f"The checkpoint's data order was made with run.mix_unit {unit} (groups of "
                              f"{group}), this run has {self.unit} (groups of {self.group_size}): set "
                              f"run.mix_unit: {unit} and batch_size_train {group} to resume, or start a new run.")

    def take(self, step: int, streams: Mapping[str, "IndexStream"]) -> list[tuple[str, int | None]]:
        """(dataset, index) per slot of step `step`, advancing `streams`; a dataset without
        a stream (an iterable one) gets index None."""
        names = self.slot_names(step)
        taken = {n: iter(streams[n].take(c)) for n, c in self.counts(names).items() if n in streams}
        return [(n, next(taken[n]) if n in taken else None) for n in names]

    def advance(self, step: int, streams: Mapping[str, "IndexStream"]) -> None:
        """Move `streams` past step `step` without building permutations (bookkeeping, replay)."""
        for name, count in self.counts(self.slot_names(step)).items():
            if name in streams:
                streams[name].advance(count)


def merge_batches(parts: list[Mapping[str, Any]], requested: list[int]) -> dict[str, Any]:
    """One micro-batch from the collated batches of its datasets, concatenated in order.

    Used when a micro-batch holds several datasets (``sample``, or micro-batches that
    straddle mixing groups): each dataset keeps its own collater. Tensors are concatenated
    along dim 0, lists joined, counts (`_num_requested`, else `requested[i]` samples asked
    of part i) summed; a part without samples (all unreadable) adds only its bookkeeping keys.

    Raises:
        DataError: the datasets' batches have different fields or tensor shapes.
    """
    if len(parts) == 1:
        return dict(parts[0])
    parts = [{"_num_requested": n, **p} for p, n in zip(parts, requested)]
    keys = list(dict.fromkeys(k for p in parts for k in p))
    full = [p for p in parts if num_samples(p) > 0] or parts[:1]
    merged: dict[str, Any] = {}
    for key in keys:
        source = parts if key.startswith("_") else full
        values = [p[key] for p in source if key in p]
        if len(values) != len(source) and not key.startswith("_"):
            raise DataError(f"a micro-batch mixes datasets whose batches differ in field '{key}'; "
                            f"give them the same fields or set run.mix_unit: step.")
        if all(isinstance(v, torch.Tensor) for v in values):
            if len({tuple(v.shape[1:]) for v in values}) != 1:
                raise DataError(f"a micro-batch mixes datasets whose '{key}' tensors have different shapes "
                                f"{sorted({tuple(v.shape) for v in values})}; use one processor size or run.mix_unit: step.")
            merged[key] = torch.cat(values)
        elif all(isinstance(v, (int, np.integer)) for v in values):
            merged[key] = sum(values)
        else:
            merged[key] = [x for v in values for x in v]
    return merged


def select_samples(batch: Mapping[str, Any], positions: list[int]) -> dict[str, Any]:
    """The micro-batch of a collated batch's samples at `positions`, in that order (the
    token-budget split of a rank's share): tensors indexed along dim 0 (per-sample ``_``
    tensors too: the dropout keys), per-sample lists picked; the other bookkeeping keys
    (``_bad_files``, ...) are left out and `_num_requested` is the samples kept, as
    unreadable samples were counted when the batch was collated.

    Raises:
        DataError: a field that is neither a per-sample tensor nor a per-sample list.
    """
    n = num_samples(batch)
    out: dict[str, Any] = {}
    index = torch.as_tensor(positions, dtype=torch.long)
    for key, value in batch.items():
        per_sample = isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n
        if per_sample:
            out[key] = value[index]
        elif key.startswith("_"):
            continue
        elif isinstance(value, (list, tuple)) and len(value) == n:
            out[key] = [value[i] for i in positions]
        else:
            raise DataError(f"batch field '{key}' is not one value per sample ({n} samples), so "
                            f"the batch cannot be split by run.max_tokens_per_micro_batch; give "
                            f"the collater per-sample fields or unset the budget.")
    out["_num_requested"] = len(positions)
    return out


def num_samples(batch: Mapping[str, Any]) -> int:
    """Samples actually present in a collated batch (requested minus dropped bad ones)."""
    if "_num_requested" in batch:
        return int(batch["_num_requested"]) - len(batch.get("_bad_files", ()))
    return len(next((v for k, v in batch.items() if not k.startswith("_")), []))


class IndexStream:
    """One dataset's sample indices, pass after pass, each pass a seeded permutation.

    The permutation is seeded by (seed, dataset name, pass) and consumed in order; indices
    are emitted as ``pass * size + i`` (the dataset contract: an index >= len encodes the
    epoch, which drives the per-epoch template draw). Its state is (pass, position);
    `advance` moves it without building permutations.

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

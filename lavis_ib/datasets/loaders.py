"""Data loaders: the training mixture (`MixtureLoader`) and rank shards of eval splits.

The training order is a function of (seed, step) alone, so any number of ranks and
accumulation steps sees the same global batches (each sample with its dropout key),
a resume continues the exact sequence, and unreadable samples are counted and bounded."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from lavis_ib.common import dist_utils
from lavis_ib.common.dropout_keys import FIELD as DROPOUT_KEYS, dropout_keys
from lavis_ib.common.errors import ConfigError, DataError
from lavis_ib.datasets.bad_samples import BadSampleLog
from lavis_ib.datasets.datasets.base import collate
from lavis_ib.datasets.mixing import IndexStream, Mixer, MixPlan, merge_batches, name_key
from lavis_ib.datasets.mixing import num_samples  # noqa: F401  (re-exported: runners, tests)

_MAX_LISTED = 20        # bad files named in the error message


def _collater(dataset: Any) -> Callable[[list], dict]:
    """The dataset's own `collater` (LAVIS's name), else the shared `collate`."""
    return getattr(dataset, "collater", None) or collate


def _is_iterable(dataset: Any) -> bool:
    return isinstance(dataset, IterableDataset) or not hasattr(dataset, "__getitem__")


def _as_list(samples: list) -> list:
    # Module level so that worker processes can unpickle it under spawn/forkserver too.
    return samples


def _torch_seed(*parts: int) -> torch.Generator:
    """A generator for DataLoader worker seeds, fixed by the run seed, rank and start step."""
    value = int(np.random.SeedSequence([int(p) % 2 ** 64 for p in parts]).generate_state(1)[0])
    return torch.Generator().manual_seed(value)


class _KeyedDatasets(Dataset):
    """Map-style view of several datasets, indexed by (slot, index)."""

    def __init__(self, datasets: Sequence[Any]) -> None:
        self.datasets = list(datasets)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, Any]:
        slot, index = key
        return slot, self.datasets[slot][index]


class _KeyedCollate:
    """Collates the map-style part of a micro-batch: [(slot, batch)], one per dataset, each
    with that dataset's collater, datasets in order of first appearance."""

    def __init__(self, collaters: Sequence[Callable]) -> None:
        self.collaters = list(collaters)

    def __call__(self, items: list[tuple[int, Any]]) -> list[tuple[int, dict]]:
        slots = dict.fromkeys(slot for slot, _ in items)
        return [(k, self.collaters[k]([x for slot, x in items if slot == k])) for k in slots]


class _MixtureBatchSampler:
    """Infinite: this rank's micro-batches of map-style datasets, in step order."""

    def __init__(self, loader: "MixtureLoader") -> None:
        self.plan, self.slots, self.start, self.cuts = loader.plan, dict(loader._slots), loader.step, loader._cuts
        self.streams = {n: IndexStream(n, p.size, loader.seed, p.pass_, p.pos) for n, p in loader._positions.items()}

    def __iter__(self):
        step = self.start
        while True:
            block, step = self.plan.take(step, self.streams), step + 1
            for cut in self.cuts:
                items = [(self.slots[n], i) for n, i in block[cut] if n in self.slots]
                if items:  # micro-batches of iterable datasets only come from their own loaders
                    yield items


class _IterableSource:
    """One iterable dataset's own stream of micro-batches on this rank."""

    def __init__(self, name: str, dataset: Any, micro: int, num_workers: int, seed: int, rank: int) -> None:
        self.name, self.dataset, self.micro = name, dataset, micro
        self.num_workers, self.seed, self.rank = num_workers, seed, rank
        self.pass_, self.consumed = 0, 0
        self._it, self._buffer, self._yielded = None, [], False

    def restart(self, pass_: int) -> None:
        self.pass_, self._it, self._buffer = pass_, None, []

    def _open(self) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.pass_)
        loader = DataLoader(self.dataset, batch_size=self.micro, collate_fn=_as_list,
                            num_workers=self.num_workers,
                            generator=_torch_seed(self.seed, self.rank, self.pass_, name_key(self.name)))
        self._it, self._yielded = iter(loader), False

    def next_batch(self, n: int) -> dict:
        while len(self._buffer) < n:
            if self._it is None:
                self._open()
            try:
                self._buffer.extend(next(self._it))
                self._yielded = True
            except StopIteration:
                self._it = None
                if not self._yielded:
                    raise DataError(f"Iterable dataset '{self.name}' yielded no samples on rank "
                                    f"{self.rank}: check its shard pattern and that there are at "
                                    f"least as many shards as ranks x workers.") from None
                self.pass_ += 1
        samples, self._buffer = self._buffer[:n], self._buffer[n:]
        self.consumed += len(samples)
        return _collater(self.dataset)(samples)


class MixtureLoader:
    """This rank's micro-batches of the training mixture, one optimizer step per call.

    Order: `MixPlan` (seeded by (seed, step): the same on every rank) names the dataset of
    each slot of step s's global batch by `run.mix_unit` (one draw per group of
    batch_size_train slots, per slot, or per step) and takes each dataset's slots from its
    `IndexStream` in slot order; the global batch is cut into world_size x accum
    micro-batches of which rank r, micro-step a gets slice a * world_size + r.
    Concatenating the ranks' micro-batches by (accum, rank) therefore gives exactly the
    global batch one process would see. A micro-batch holding several datasets is collated
    per dataset and concatenated (`merge_batches`).

    Loading: all map-style datasets share ONE torch DataLoader whose batch sampler walks the
    same choice sequence, so its workers prefetch exactly the micro-batches the next steps
    will ask for (one loader per dataset would start num_workers processes per dataset and
    prefetch batches of datasets that are rarely chosen). Its iterator lives for the whole
    run (the sampler is infinite), so worker processes persist without
    `persistent_workers`. Each iterable (webdataset) dataset has its own DataLoader and is
    pulled only when chosen; the dataset splits itself by rank and worker. When one pass
    ends its loader is rebuilt (new workers, so that `set_epoch(pass)`, when the dataset
    has it, reaches the workers' copies).

    Resume: `state_dict()` holds the step and each map-style stream's (pass, position), so
    `load_state_dict` continues the exact sequence without replay. Iterable datasets are
    best-effort: a resumed run starts a new pass of each (pass + 1 through `set_epoch` when
    available) instead of skipping the samples already seen, which would mean decoding them.

    Bad samples: datasets return `BadSample(path, reason)` for unreadable images and their
    collater (the shared `datasets.datasets.base.collate` for datasets without one) drops
    them, listing `batch["_bad_files"]`. The loader counts samples requested and bad, and
    raises `DataError` listing the files once the bad fraction exceeds
    `max_bad_sample_fraction` of max(samples requested, `bad_sample_grace`). Each distinct
    bad file is logged once (WARNING, name and reason) and kept as an event for the
    runner's log (`pop_bad_events`). Micro-batches keep their place in the step even when
    samples were dropped, so they may hold fewer than `micro_batch_size` samples (or none;
    see `num_samples`); a step in which every sample on this rank was unreadable is a
    `DataError` (there is no loss to log or gradient to apply).

    Args:
        datasets: {name: training dataset}; map-style (len, __getitem__ with index >= len
            encoding the epoch, `collater`) or iterable (yields processed samples, splits
            itself by rank and worker).
        sample_ratios: {name: hand adjustment}; names left out get 1.0.
        global_batch_size: samples per optimizer step over all ranks.
        micro_batch_size: samples per forward on one rank.
        rank, world_size: this process's place (None: from the process group).
        seed: run seed (the choice sequence and permutations depend only on it).
        num_workers: DataLoader worker processes per loader (0: load in this process).
        balanced: p ~ sqrt(size) x ratio; False: p ~ size x ratio.
        max_bad_sample_fraction: stop (DataError) when more samples than this are bad.
        bad_sample_grace: the bad fraction's denominator is at least this many samples,
            so a few unreadable files early on do not stop a run (0: strict from the start).
        sizes: {name: number of samples} for mixing weights. Without an entry the size is
            `len(dataset)`, else an int `dataset.size` (for iterable datasets); for
            map-style datasets it changes the weight only, never the stream.
        pin_memory: passed to the DataLoaders.
        mix_unit: ``micro_batch`` | ``sample`` | ``step`` (`run.mix_unit`, see `MixPlan`).
        mix_group: slots per draw for ``micro_batch``: run.batch_size_train (default:
            `micro_batch_size`), so that the plan does not depend on the derived micro-batch.
        per_sample_dropout: give each micro-batch its samples' dropout keys
            (`run.per_sample_dropout`).

    Raises:
        ConfigError: batch sizes that do not divide, a bad rank, unknown ratio names or
            mix unit, a dataset without samples or without a known size.

    Example:
        >>> loader = MixtureLoader(train_sets, ratios, 128, 8, rank, world, seed=42, num_workers=2)
        >>> for micro_batch in loader.next_step():   # loader.accum_steps micro-batches
        ...     model(micro_batch)["loss_sum"].backward()
    """

    def __init__(self, datasets: Mapping[str, Any], sample_ratios: Mapping[str, float] | None,
                 global_batch_size: int, micro_batch_size: int, rank: int | None = None,
                 world_size: int | None = None, seed: int = 42, num_workers: int = 0,
                 balanced: bool = True, *, max_bad_sample_fraction: float = 0.01,
                 bad_sample_grace: int = 1000, sizes: Mapping[str, int] | None = None,
                 pin_memory: bool = False, mix_unit: str = "micro_batch", mix_group: int | None = None,
                 per_sample_dropout: bool = True) -> None:
        rank = dist_utils.get_rank() if rank is None else int(rank)
        world_size = dist_utils.get_world_size() if world_size is None else int(world_size)
        for key, value in (("global_batch_size", global_batch_size), ("batch_size_train", micro_batch_size),
                           ("world_size", world_size)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"run.{key} must be a positive integer, got {value!r}.")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside world size {world_size}.")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(f"run.num_workers must be an integer >= 0, got {num_workers!r}.")
        if not 0.0 <= float(max_bad_sample_fraction) <= 1.0:
            raise ConfigError(f"run.max_bad_sample_fraction must be in [0, 1], got {max_bad_sample_fraction!r}.")
        per_pass = micro_batch_size * world_size
        if global_batch_size % per_pass:
            raise ConfigError(
                f"run.global_batch_size ({global_batch_size}) must be a multiple of batch_size_train "
                f"({micro_batch_size}) x world size ({world_size}) = {per_pass}; e.g. set it to "
                f"{max(per_pass, round(global_batch_size / per_pass) * per_pass)} or change batch_size_train.")
        if not datasets:
            raise ConfigError("No training datasets: list at least one under `datasets:` with a train split.")
        self.global_batch_size, self.micro_batch_size = int(global_batch_size), int(micro_batch_size)
        self.rank, self.world_size, self.seed = rank, world_size, int(seed)
        self.accum_steps = global_batch_size // per_pass
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.per_sample_dropout = bool(per_sample_dropout)
        self.max_bad_sample_fraction, self.bad_sample_grace = float(max_bad_sample_fraction), int(bad_sample_grace)
        self.datasets = dict(datasets)

        mix_sizes = {name: self._size(name, ds, sizes or {}) for name, ds in self.datasets.items()}
        self.mixer = Mixer(mix_sizes, sample_ratios, balanced, seed)
        self.probabilities = self.mixer.probabilities
        self.plan = MixPlan(self.mixer, self.global_batch_size, mix_unit, mix_group or self.micro_batch_size)
        self._cuts = self.plan.rank_cuts(micro_batch_size, rank, world_size)
        map_names = [n for n in self.mixer.names if not _is_iterable(self.datasets[n])]
        self._slots, self._map_names = {n: k for k, n in enumerate(map_names)}, map_names
        # Main-process bookkeeping of the map-style streams: positions only, no permutations.
        self._positions = {n: IndexStream(n, len(self.datasets[n]), seed) for n in map_names}
        self._iterables = {n: _IterableSource(n, ds, micro_batch_size, num_workers, seed, rank)
                           for n, ds in self.datasets.items() if _is_iterable(ds)}
        self._map_iter = None
        self.step = 0
        self.last_dataset: str | None = None   # the step's one dataset; None when it mixed several
        self.last_datasets: list[list[str]] = []  # this rank's micro-batches: each sample's dataset
        self._badlog = BadSampleLog("training")

    @staticmethod
    def _size(name: str, dataset: Any, sizes: Mapping[str, int]) -> int:
        if name in sizes:
            return int(sizes[name])
        try:
            return len(dataset)
        except TypeError:
            pass
        if isinstance(getattr(dataset, "size", None), int):  # iterable datasets told their size
            return dataset.size
        raise ConfigError(f"Training dataset '{name}' is iterable and has no length: give its number "
                          f"of samples (datasets.{name}.size, as the dataset's `size` attribute or "
                          f"MixtureLoader(sizes=...)) so it can be weighted.")

    # -- stepping ---------------------------------------------------------------------
    def next_step(self) -> list[dict]:
        """This rank's `accum_steps` collated micro-batches for the next optimizer step.

        Raises:
            DataError: the fraction of unreadable samples exceeds `max_bad_sample_fraction`.
        """
        names = self.plan.slot_names(self.step)
        batches, self.last_datasets = [], []
        for cut in self._cuts:
            counts = self.plan.counts(names[cut])   # {dataset: samples}
            parts = self._map_parts(list(counts)) if any(n in self._slots for n in counts) else {}
            for name, n in counts.items():
                if name in self._iterables:
                    parts[name] = self._iterables[name].next_batch(n)
                self._count(parts[name], name, n)
            batches.append(merge_batches([parts[name] for name in counts], list(counts.values())))
            if self.per_sample_dropout:
                batches[-1][DROPOUT_KEYS] = self._dropout_keys(names, cut, counts, parts)
            self.last_datasets.append([name for name, n in counts.items() for _ in range(n)])
        self.plan.advance(self.step, self._positions)
        self.step += 1
        self.last_dataset = names[0] if len(set(names)) == 1 else None
        self._check_bad()
        self._check_empty_step(batches, sorted(set(names)))
        return batches

    def _map_parts(self, order: list[str]) -> dict[str, dict]:
        """The next micro-batch of the shared map-style DataLoader, {dataset: collated part}."""
        if self._map_iter is None:
            self._map_iter = iter(self._map_loader())
        parts = {self._map_names[slot]: batch for slot, batch in next(self._map_iter)}
        if list(parts) != [n for n in order if n in self._slots]:  # the sampler walks the same plan
            raise RuntimeError(f"MixtureLoader out of sync at step {self.step}: expected {order}.")
        return parts

    def _map_loader(self) -> DataLoader:
        names = self._map_names
        return DataLoader(_KeyedDatasets([self.datasets[n] for n in names]),
                          batch_sampler=_MixtureBatchSampler(self),
                          collate_fn=_KeyedCollate([_collater(self.datasets[n]) for n in names]),
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          generator=_torch_seed(self.seed, self.rank, self.step))

    def _dropout_keys(self, names: list[str], cut: slice, counts: Mapping[str, int],
                      parts: Mapping[str, Any]) -> torch.Tensor:
        """The samples' dropout keys, in the merged batch's order (dataset by dataset, each
        in slot order). A part that lost unreadable samples keys its first slots."""
        slots = []
        for name in counts:
            mine = [cut.start + i for i, n in enumerate(names[cut]) if n == name]
            slots += mine[: num_samples(parts[name])]
        return dropout_keys(self.seed, self.step, slots)

    # -- bad samples -------------------------------------------------------------------
    def _count(self, batch: Mapping[str, Any], dataset: str, requested: int) -> None:
        if "_num_requested" not in batch:
            batch = {**batch, "_num_requested": requested}
        self._badlog.add(batch, step=self.step + 1, dataset=dataset)

    def _check_empty_step(self, batches: Sequence[Mapping[str, Any]], names: list[str]) -> None:
        """Every sample of this step unreadable: stop with the files rather than step on
        nothing (which would log a loss of 0.0)."""
        if batches and all(num_samples(b) == 0 for b in batches):
            files = [f for b in batches for f in b.get("_bad_files", ())]
            raise DataError(f"every one of the {len(files)} samples of step {self.step} on rank "
                            f"{self.rank} ({', '.join(names)}) was unreadable: "
                            f"{', '.join(map(str, files[:_MAX_LISTED]))}. Fix or remove these files.")

    def _check_bad(self) -> None:
        if self._bad <= self.max_bad_sample_fraction * max(self._requested, self.bad_sample_grace):
            return
        files = list(self._bad_files)
        listed = "\n  ".join(files[:_MAX_LISTED])
        more = f"\n  ... and {len(files) - _MAX_LISTED} more" if len(files) > _MAX_LISTED else ""
        raise DataError(
            f"{self._bad} of {self._requested} training samples on rank {self.rank} "
            f"({self.bad_fraction():.2%}) could not be read, more than run.max_bad_sample_fraction = "
            f"{self.max_bad_sample_fraction} (of at least run.bad_sample_grace = {self.bad_sample_grace} "
            f"samples). Fix or remove these files, or raise the limit:\n  {listed}{more}")

    # the counters live in the BadSampleLog; these names are kept for the state dict
    _requested = property(lambda self: self._badlog.requested)
    _bad = property(lambda self: self._badlog.bad)
    _bad_files = property(lambda self: self._badlog.files)

    def pop_bad_events(self) -> list[dict[str, Any]]:
        """Bad files first met since the last call, one event dict each (`event`, `path`,
        `reason`, `step`, `dataset`, `num_bad`): for the runner to write to log.jsonl."""
        return self._badlog.pop_events()

    def bad_fraction(self) -> float:
        """Bad samples / samples requested so far on this rank (0.0 before any)."""
        return self._bad / self._requested if self._requested else 0.0

    @property
    def bad_files(self) -> list[str]:
        """Distinct unreadable files met on this rank, in order (the first 10,000)."""
        return list(self._bad_files)

    @property
    def num_bad(self) -> int:
        return self._bad

    @property
    def num_requested(self) -> int:
        return self._requested

    # -- state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Step, stream positions and bad-sample counters (JSON/torch.save friendly).

        The step and map-style positions are the same on every rank; the counters and
        iterable passes are this rank's. Saving rank 0's state is enough to resume.
        """
        return {"version": 2, "step": self.step, "seed": self.seed, **self.plan.state_dict(),
                "streams": {n: p.state_dict() for n, p in self._positions.items()},
                "iterables": {n: {"pass": s.pass_, "consumed": s.consumed} for n, s in self._iterables.items()},
                "bad": {"requested": self._requested, "bad": self._bad, "files": list(self._bad_files)}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue exactly where `state` was taken.

        A state with only "step" (e.g. from another tool) is rebuilt by replaying the
        dataset choices of steps 0..step-1 (cheap: no data is read).

        Raises:
            ConfigError: the checkpoint's seed, mix unit or datasets differ from this loader's.
        """
        if int(state.get("seed", self.seed)) != self.seed:
            raise ConfigError(f"The checkpoint's data order was made with run.seed {state['seed']}, this run "
                              f"has {self.seed}: resume with the same seed, or start a new run.")
        self.plan.check_state(state)
        step = int(state["step"])
        streams = state.get("streams")
        if streams is not None:
            if set(streams) != set(self._positions):
                raise ConfigError(f"The checkpoint mixed datasets {sorted(streams)}, this run has "
                                  f"{sorted(self._positions)}: resume with the same datasets.")
            for name, pos in self._positions.items():
                pos.load_state_dict(streams[name])
        else:
            for t in range(step):
                self.plan.advance(t, self._positions)  # from fresh streams: pass 0, position 0
        for name, source in self._iterables.items():
            saved = state.get("iterables", {}).get(name)
            source.restart(int(saved["pass"]) + 1 if saved else 0)
            source.consumed = int(saved["consumed"]) if saved else 0
        bad = state.get("bad", {})
        self._badlog.requested, self._badlog.bad = int(bad.get("requested", 0)), int(bad.get("bad", 0))
        self._badlog.files = dict.fromkeys(bad.get("files", ()))
        self.step = step
        self._map_iter = None  # the sampler restarts from the restored step on next use

    def close(self) -> None:
        """Stop worker processes (they also stop when the loader is garbage-collected)."""
        self._map_iter = None
        for source in self._iterables.values():
            source._it = None


def eval_shard(num_samples: int, rank: int, world_size: int) -> range:
    """Contiguous slice of an eval split for `rank`: every index exactly once over all ranks."""
    return range(num_samples * rank // world_size, num_samples * (rank + 1) // world_size)


def eval_loader(dataset: Any, batch_size: int, rank: int | None = None, world_size: int | None = None,
                num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """DataLoader over this rank's contiguous shard of an eval split, in order.

    No padding and no duplicates: shard sizes differ by at most one and a rank may get
    none (the gather across ranks needs no de-duplication, though ids make it safe).
    Iterable datasets are passed through whole and must split themselves by rank.
    Workers are not persistent: evaluation runs every few thousand steps and persistent
    workers would hold a copy of every eval split during training.

    Args:
        dataset: map-style eval dataset with `collater` (or the default collation).
        batch_size: samples per batch on this rank.
        rank, world_size: this process's place (None: from the process group).
        num_workers: DataLoader worker processes.
        pin_memory: passed to the DataLoader.
    """
    rank = dist_utils.get_rank() if rank is None else int(rank)
    world_size = dist_utils.get_world_size() if world_size is None else int(world_size)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"run.batch_size_eval must be a positive integer, got {batch_size!r}.")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is outside world size {world_size}.")
    common = dict(batch_size=batch_size, collate_fn=_collater(dataset), num_workers=num_workers,
                  pin_memory=pin_memory, drop_last=False)
    if _is_iterable(dataset):
        return DataLoader(dataset, **common)
    return DataLoader(dataset, sampler=eval_shard(len(dataset), rank, world_size), **common)

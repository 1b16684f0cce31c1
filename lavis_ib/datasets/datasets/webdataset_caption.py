"""Web CapFilt: captions streamed from webdataset tar shards.

An iterable dataset because 14M image-caption pairs cannot be indexed in memory; shards are
split by rank and worker, and seeded, so each pass sees every sample once, reproducibly
(`WebCaptionDataset`)."""
from __future__ import annotations

import io
import json
import os
import random
import zlib
from typing import Any, Iterator, Sequence

from torch.utils.data import IterableDataset

from lavis_ib.common import dist_utils
from lavis_ib.common.errors import ConfigError, DataError
from lavis_ib.datasets.datasets.base import BadSample, collate, make_instruction, sample_rng
from lavis_ib.datasets.datasets.image_keys import image_key_tensor
from lavis_ib.processors.image import decode_image
from lavis_ib.processors.text import normalize_caption

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def expand_shards(patterns: Sequence[str]) -> list[str]:
    """Every shard named by brace patterns such as ``a/{000..009}.tar``."""
    import braceexpand

    return [url for p in patterns for url in braceexpand.braceexpand(str(p))]


def refuse_pipes(shards: Sequence[str], allow_pipe: bool) -> None:
    """A ConfigError for a ``pipe:`` shard url (it runs a shell command) unless allowed."""
    pipes = [s for s in shards if str(s).strip().startswith("pipe:")]
    if pipes and not allow_pipe:
        raise ConfigError(f"WebCaptionDataset: shard url '{pipes[0]}' runs a shell command; set "
                          f"allow_pipe: true on the dataset if you trust this config.")


class WebCaptionDataset(IterableDataset):
    """Iterable captioning dataset over webdataset shards (training only).

    Each shard holds samples ``<key>.jpg`` (or .jpeg/.png/.webp) + ``<key>.txt`` (the caption)
    or ``<key>.json`` (``{"caption": ...}``, a string or a list of captions: BLIP-2's CapFilt
    keeps two per image, one used per step). Shards are given as brace patterns
    (``shards/{000000..001399}.tar``) and split first by rank (lavis_ib.common.dist_utils, or
    the `rank`/`world_size` arguments) and then by DataLoader worker, with webdataset's
    nodesplitter/workersplitter hooks: each sample is seen once per pass over the shards
    when every worker holds at least one shard.

    Shuffling (both seeded, so a pass is reproducible): with `shuffle_shards` the shard list
    is permuted by (seed, epoch) before the rank split -- the same permutation on every rank,
    so the exactly-once property holds; `shuffle_buffer` > 0 shuffles samples within each
    worker's stream through a buffer of that size seeded by (seed, epoch, rank, worker).

    Yielded samples are already processed: ``image``, ``text_input`` (a caption template
    drawn from (seed, epoch, crc32 of shard file name and key)), ``text_output`` (the
    normalised caption; of several, one drawn from the same (seed, epoch, crc32) on stream
    2) and, with `image_ids`, ``image_id`` (an int64 key of the shard file name and key). A
    sample whose image cannot be decoded or whose caption is missing is yielded as a
    `BadSample` (the collater drops it and lists it) and counted in `num_bad` (per process).

    Args:
        vis_processor: image processor (PIL -> tensor).
        text_processor: `instruction_template` processor (caption family).
        vis_root: unused (images live in the shards); kept for the LAVIS signature.
        ann_paths: shard urls or brace patterns.
        num_samples: samples per pass (reported by `len`, used for mixing weights).
        rank, world_size: the process's place; default: lavis_ib.common.dist_utils.
        shuffle_shards: permute the shards per pass (the same order on every rank).
        shuffle_buffer: sample shuffle buffer per worker (0: stream order).
        allow_pipe: accept ``pipe:`` shard urls, which run a shell command (refused by
            default: a dataset config should not be able to run programs).
        image_ids: add ``image_id`` (int64 key of the sample) to each sample.
    """

    is_train = True
    uses_template = True

    def __init__(self, vis_processor: Any = None, text_processor: Any = None, vis_root: str | None = None,
                 ann_paths: Sequence[str] = (), num_samples: int | None = None, rank: int | None = None,
                 world_size: int | None = None, shuffle_shards: bool = False,
                 shuffle_buffer: int = 0, allow_pipe: bool = False, image_ids: bool = False) -> None:
        super().__init__()
        self.vis_processor, self.text_processor = vis_processor, text_processor
        self.vis_root = vis_root
        self.shards = expand_shards([ann_paths] if isinstance(ann_paths, str) else ann_paths)
        refuse_pipes(self.shards, allow_pipe)
        self.num_samples = int(num_samples) if num_samples is not None else None
        self.rank, self.world_size = rank, world_size
        self.shuffle_shards, self.shuffle_buffer = bool(shuffle_shards), int(shuffle_buffer)
        self.seed = int(getattr(text_processor, "seed", 0))
        self.epoch = 0
        self.num_bad = 0
        self.image_ids = bool(image_ids)
        self._shard_errors: list[BadSample] = []

    def set_epoch(self, epoch: int) -> None:
        """The pass number used in the template draw (call before each pass)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.num_samples is None:
            raise TypeError("WebCaptionDataset has no num_samples; set it in the dataset config.")
        return self.num_samples

    def place(self) -> tuple[int, int]:
        """(rank, world_size) of this process."""
        rank = dist_utils.get_rank() if self.rank is None else self.rank
        world = dist_utils.get_world_size() if self.world_size is None else self.world_size
        return rank, world

    def split_by_rank(self, urls: Any) -> Iterator[str]:
        """webdataset nodesplitter: this rank's share of the shard list."""
        rank, world = self.place()
        for i, url in enumerate(urls):
            if i % world == rank:
                yield url

    def raw_samples(self) -> Any:
        import webdataset as wds
        from torch.utils.data import get_worker_info

        urls = list(self.shards)
        if self.shuffle_shards:  # string seeds are hashed deterministically (sha512)
            random.Random(f"shards:{self.seed}:{self.epoch}").shuffle(urls)
        stream = wds.WebDataset(urls, nodesplitter=self.split_by_rank, workersplitter=wds.split_by_worker,
                                shardshuffle=False, empty_check=False, handler=self._tar_error)
        if self.shuffle_buffer > 0:
            worker = get_worker_info()
            seed = f"samples:{self.seed}:{self.epoch}:{self.place()[0]}:{worker.id if worker else 0}"
            stream = stream.shuffle(self.shuffle_buffer, rng=random.Random(seed))
        return stream

    def _tar_error(self, exc: Exception) -> bool:
        """webdataset's handler: a shard that cannot be opened or a broken tar member is
        skipped, and becomes a BadSample that `__iter__` yields (so the loader logs and
        counts it like an unreadable image)."""
        self.num_bad += 1
        args = [str(a) for a in getattr(exc, "args", ()) if a is not None]
        named = [str(getattr(exc, "filename", None) or "")] + list(reversed(args))
        where = next((a for a in named if a in self.shards or "/" in a or a.endswith(".tar")), "a shard")
        message = " ".join(a for a in args[:2] if a != where) or str(exc)
        reason = f"shard error: {type(exc).__name__}: {message}"
        self._shard_errors.append(BadSample(where, reason[:300]))
        return True

    def decode(self, raw: dict[str, Any]) -> Any:
        where = f"{raw.get('__url__')}#{raw.get('__key__')}"
        ext = next((e for e in IMAGE_EXTS if e in raw), None)
        if ext is None:
            return BadSample(where, "no image member")
        try:
            if "txt" in raw:
                caption = raw["txt"].decode("utf-8")
            else:
                caption = json.loads(raw["json"].decode("utf-8"))["caption"]
        except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
            return BadSample(where, f"no readable caption: {exc!r}")
        several = isinstance(caption, list) and caption and all(isinstance(c, str) for c in caption)
        if not several and not isinstance(caption, str):
            return BadSample(where, f"the caption must be a string or a non-empty list of strings, "
                                    f"got {type(caption).__name__}")
        try:
            image = decode_image(io.BytesIO(raw[ext]))
        except DataError as exc:
            return BadSample(where, f"image {exc}")
        # the shard's file name, not its path: the draw must not change when data move
        name = f"{os.path.basename(str(raw.get('__url__')))}#{raw.get('__key__')}"
        index = zlib.crc32(name.encode("utf-8"))
        if isinstance(caption, list):   # one of several, drawn per pass from the sample's generator
            caption = caption[int(sample_rng(self.seed, self.epoch, index, 2).integers(len(caption)))]
        sample = {"image": self.vis_processor(image) if self.vis_processor else image,
                  "text_input": make_instruction(self.text_processor, index, self.epoch),
                  "text_output": normalize_caption(caption)}
        if self.image_ids:
            sample["image_id"] = image_key_tensor("webdataset", name)
        return sample

    def __iter__(self) -> Iterator[Any]:
        rank, world = self.place()
        if len(self.shards) < world:
            # a rank without shards would stall every step that draws this dataset
            raise DataError(f"WebCaptionDataset: {len(self.shards)} shard(s) for {world} ranks; rank {rank} "
                            f"gets none. Write at least one shard per rank (better: per rank x worker).")
        self._shard_errors = []
        for raw in self.raw_samples():
            yield from self._drain_shard_errors()
            sample = self.decode(raw)
            if isinstance(sample, BadSample):
                self.num_bad += 1
            yield sample
        yield from self._drain_shard_errors()

    def _drain_shard_errors(self) -> Iterator[BadSample]:
        errors, self._shard_errors = self._shard_errors, []
        yield from errors

    def collater(self, samples: Sequence[Any]) -> dict[str, Any]:
        return collate(samples)

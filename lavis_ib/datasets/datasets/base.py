"""Shared pieces of every dataset class: `BadSample`, image loading, the epoch-encoded
index of training sets, seeded per-sample draws and the collater.

One home for them, so every dataset skips unreadable files and draws its random choices the
same way, whatever worker, rank or resume reads a sample (the contract: `BaseDataset`)."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from lavis_ib.common.errors import DataError


@dataclass(frozen=True)
class BadSample:
    """A sample whose image or video could not be read; the collater drops it.

    Attributes:
        path: the file that failed.
        reason: why (missing, cannot be decoded, ...).
    """

    path: str
    reason: str


def load_image(path: str) -> Any:
    """The RGB PIL image at `path`, or a `BadSample` saying why it cannot be read.

    16-bit images are scaled to 8 bits (a plain convert would saturate them to white);
    NaN/inf pixels and decompression bombs are BadSamples (`processors.image.decode_image`).
    """
    from lavis_ib.processors.image import decode_image

    if not os.path.isfile(path):
        return BadSample(str(path), "missing")
    try:
        return decode_image(path)
    except DataError as exc:
        return BadSample(str(path), str(exc))


def confine(root: str, relative: str, allow_outside: bool = False) -> BadSample | None:
    """None when `root/relative` lies inside `root` (symlinks resolved), else a BadSample.

    The reason is the same whether or not the outside file exists, so that a hostile
    annotation cannot probe the file system through the skip log.
    """
    if allow_outside or not root:
        return None
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(root, str(relative)))
    if real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep):
        return None
    return BadSample(str(relative), "outside the dataset's media folder (vis_root); set "
                                    "allow_outside_root: true on the dataset to allow it")


def sample_rng(seed: int, epoch: int, index: int, stream: int) -> np.random.Generator:
    """A generator for one sample's draw number `stream` (0 is the template draw of the
    instruction_template processor; others use 1, 2, ...): depends on nothing else."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index), int(stream)])


_AUGMENT_STREAM = 0x617567  # keeps the augmentation seed apart from the numpy draws


def augment_seed(seed: int, epoch: int, dataset_key: int, index: int) -> int:
    """The torch seed of one sample's visual augmentation."""
    seq = np.random.SeedSequence([_AUGMENT_STREAM, int(seed) & 0xFFFFFFFF, int(epoch),
                                  int(dataset_key) % 2 ** 64, int(index)])
    return int(seq.generate_state(1, dtype=np.uint64)[0] % 2 ** 63)


@contextlib.contextmanager
def seeded_torch(seed: int):
    """Run a block with torch's CPU RNG seeded by `seed`; the caller's state comes back."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def draw_by_frequency(answers: Sequence[str], rng: np.random.Generator) -> str:
    """One answer drawn with probability proportional to how many annotators gave it."""
    if not answers:
        raise DataError("a training sample has no answer to draw from")
    unique, counts = np.unique(np.asarray(list(answers), dtype=object).astype(str),
                               return_counts=True)
    return str(unique[rng.choice(len(unique), p=counts / counts.sum())])


def make_instruction(processor: Any, index: int, epoch: int, question: str | None = None,
                     answer: str | None = None) -> str:
    """The templated instruction from an `instruction_template` processor.

    A plain LAVIS text processor (e.g. ``blip_question``) is also accepted: it is applied
    to the question (or answer; "" for captions, so ``blip_caption`` gives its prompt),
    which reproduces LAVIS's untemplated inputs.
    """
    text = question if question is not None else (answer if answer is not None else "")
    if processor is None:
        return str(text)
    if hasattr(processor, "draw") and hasattr(processor, "format"):
        return processor(index=index, epoch=epoch, question=question, answer=answer)
    return processor(text)


def collate(samples: Sequence[Any]) -> dict[str, Any]:
    """The one collater: stack tensors, keep other values as lists; drop BadSamples
    (listed in `_bad_files`, their reasons in `_bad_reasons`, with `_num_requested` =
    samples given).

    Also used by the loaders for datasets without a `collater`. Tensors of one key must
    share a shape: a silent fallback to a list would only fail later, inside the model.
    """
    good = [s for s in samples if not isinstance(s, BadSample)]
    batch: dict[str, Any] = {}
    keys: list[str] = []
    for sample in good:
        keys.extend(k for k in sample if k not in keys)
    for key in keys:
        values = [sample.get(key) for sample in good]
        if all(isinstance(v, torch.Tensor) for v in values):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) != 1:
                raise DataError(f"collater: '{key}' tensors have different shapes {sorted(shapes)}; "
                                f"use one image/video processor size for the whole dataset.")
            batch[key] = torch.stack(values)
        else:
            batch[key] = values
    batch["_bad_files"] = [s.path for s in samples if isinstance(s, BadSample)]
    batch["_bad_reasons"] = [s.reason for s in samples if isinstance(s, BadSample)]
    batch["_num_requested"] = len(samples)
    return batch


class BaseDataset(Dataset):
    """Base of the map-style datasets: annotations in memory as a list of records.

    Contract (docs/architecture.md): a dataset is built with the LAVIS signature
    ``(vis_processor=, text_processor=, vis_root=, ann_paths=)``; ``__getitem__(i)`` returns a
    sample dict, or `BadSample(path, reason)` when its image/video cannot be read;
    ``collater(samples)`` stacks tensors, keeps every other key as a list, drops BadSamples
    and lists their paths under ``_bad_files`` (with ``_num_requested`` = samples asked for).

    Training sets accept ``i >= len(self)``: ``epoch, index = divmod(i, len(self))``, and
    every random choice of a sample (template, answer) is seeded by (seed, epoch, index).
    The visual processor (random crop, flip, RandomAugment: every draw from torch's
    global RNG) runs under a forked torch RNG seeded by (seed, epoch, dataset, index)
    (`augment_seed`), so a sample's augmentation does not depend on the loader worker that
    reads it, on num_workers, on the rank or world size, or on a resume.

    Args:
        vis_processor: image (or video) processor, called with a PIL image (or a path).
        text_processor: `instruction_template` processor for training sets, a question /
            caption processor for evaluation sets.
        vis_root: folder the records' image paths are relative to.
        ann_paths: annotation files, read by `load_annotations`.
        allow_outside_root: read media paths that resolve outside `vis_root` (absolute
            paths, ``..``, symlinks out); by default such a record is a BadSample.
    """

    is_train = False
    #: training sets drawing instruction templates need text_processor.train (builders check)
    uses_template = False

    def __init__(self, vis_processor: Any = None, text_processor: Any = None,
                 vis_root: str | None = None, ann_paths: Sequence[str] = (),
                 allow_outside_root: bool = False, **kwargs: Any) -> None:
        self.vis_processor = vis_processor
        self.allow_outside_root = bool(allow_outside_root)
        self.text_processor = text_processor
        self.vis_root = str(vis_root) if vis_root is not None else ""
        self.ann_paths = [str(p) for p in ([ann_paths] if isinstance(ann_paths, str) else ann_paths)]
        unknown = set(kwargs) - set(self.extra_args())
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected arguments {sorted(unknown)}; "
                            f"it accepts {sorted(self.extra_args())}.")
        self.options = {**self.extra_args(), **kwargs}
        self.seed = int(getattr(text_processor, "seed", 0))
        self.annotation = self.load_annotations(self.ann_paths)

    # -- subclass hooks ---------------------------------------------------------------
    @classmethod
    def extra_args(cls) -> dict[str, Any]:
        """Keyword arguments beyond the LAVIS four, with their defaults."""
        return {}

    def load_annotations(self, ann_paths: list[str]) -> list[dict[str, Any]]:
        raise NotImplementedError(f"{type(self).__name__} must implement load_annotations")

    def build_sample(self, record: dict[str, Any], visual: Any, index: int,
                     epoch: int) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement build_sample")

    # -- shared behaviour -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.annotation)

    def split_index(self, i: int) -> tuple[int, int]:
        """(epoch, index) of a requested index; eval sets accept only 0 <= i < len."""
        n = len(self)
        if n == 0:
            raise IndexError(f"{type(self).__name__} is empty")
        if i < 0 or (i >= n and not self.is_train):
            raise IndexError(f"index {i} out of range for {type(self).__name__} of size {n}")
        epoch, index = divmod(int(i), n)
        return epoch, index

    def visual_path(self, record: dict[str, Any]) -> str:
        return os.path.join(self.vis_root, record["image"])

    def load_visual(self, record: dict[str, Any]) -> Any:
        """The processed image tensor of a record, or a BadSample."""
        outside = confine(self.vis_root, record["image"], self.allow_outside_root)
        if outside is not None:
            return outside
        path = self.visual_path(record)
        image = load_image(path)
        if isinstance(image, BadSample) or self.vis_processor is None:
            return image
        try:
            return self.vis_processor(image)
        except DataError as exc:   # e.g. a processed tensor that is not finite
            return BadSample(path, str(exc))

    def __getitem__(self, i: int) -> Any:
        epoch, index = self.split_index(i)
        record = self.annotation[index]
        with seeded_torch(augment_seed(self.seed, epoch, self.dataset_key(), index)):
            visual = self.load_visual(record)
        if isinstance(visual, BadSample):
            return visual
        return self.build_sample(record, visual, index, epoch)

    def rng(self, index: int, epoch: int, stream: int = 1) -> np.random.Generator:
        return sample_rng(self.seed, epoch, index, stream)

    def dataset_key(self) -> int:
        """A stable key of this dataset (its class and annotation file names), so two
        mixed datasets do not share augmentations at the same index."""
        from lavis_ib.datasets.mixing import name_key

        names = sorted(os.path.basename(str(p)) for p in (self.ann_paths or []))
        return name_key(f"{type(self).__name__}:{','.join(names)}")

    def collater(self, samples: Sequence[Any]) -> dict[str, Any]:
        return collate(samples)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n={len(self)}, vis_root={self.vis_root!r}, "
                f"ann_paths={self.ann_paths!r})")

"""Video processors: PyAV decoding, N frames sampled uniformly, output (C, T, H, W), so the
video datasets reach the model as a few frames per clip, each read by the image path.
PyAV and torchvision are imported when first needed, so looking processors up stays cheap.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from lavis_ib.common.errors import DataError
from lavis_ib.common.registry import registry
from lavis_ib.processors.base_processor import BaseProcessor
from lavis_ib.processors.image import CLIP_MEAN, CLIP_STD, bicubic, check_finite, transforms_v2


def uniform_frame_indices(num_frames_in_video: int, n: int) -> list[int]:
    """Indices at the centres of `n` equal segments of the clip (repeats when the clip is
    short)."""
    if num_frames_in_video <= 0:
        raise ValueError("the video has no frames")
    edges = np.linspace(0, num_frames_in_video, n + 1)
    return [min(int((a + b) / 2), num_frames_in_video - 1) for a, b in zip(edges[:-1], edges[1:])]


def read_video_frames(path: str, n_frames: int = 4) -> torch.Tensor:
    """(T, C, H, W) uint8 frames of `path`, sampled uniformly (PyAV, imported here: not
    when the module loads).

    Raises:
        DataError: the file is missing or cannot be decoded.
    """
    if not os.path.isfile(path):
        raise DataError(f"video '{path}' does not exist.")
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise DataError(f"video '{path}' has no video stream (audio only?); "
                                f"remove it from the dataset or re-encode it with its frames.")
            stream = container.streams.video[0]
            total = stream.frames
            if total <= 0:  # containers without a frame count: decode once to count
                total = sum(1 for _ in container.decode(stream))
                container.seek(0)
            wanted = uniform_frame_indices(total, n_frames)
            wanted_set, last = set(wanted), max(wanted)
            frames: dict[int, np.ndarray] = {}
            for i, frame in enumerate(container.decode(stream)):
                if i in wanted_set:
                    frames[i] = frame.to_ndarray(format="rgb24")
                if i >= last:
                    break
    except (av.error.FFmpegError, IndexError, ValueError) as exc:
        raise DataError(f"video '{path}' cannot be decoded: {exc}") from None
    if not frames:
        raise DataError(f"video '{path}' yielded no frames.")
    # a stream whose header over-counts frames: fall back to the last decoded frame
    fallback = frames[max(frames)]
    stacked = np.stack([frames.get(i, fallback) for i in wanted])
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


class _VideoProcessor(BaseProcessor):
    def __init__(self, image_size: int = 224, n_frms: int = 4,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        self.image_size = int(image_size)
        self.n_frms = int(n_frms)
        self.normalize = transforms_v2().Normalize(tuple(mean or CLIP_MEAN), tuple(std or CLIP_STD))

    def __call__(self, video) -> torch.Tensor:
        """`video`: a path, or a (T, C, H, W) uint8 tensor already decoded."""
        frames = read_video_frames(video, self.n_frms) if isinstance(video, (str, os.PathLike)) \
            else video
        out = check_finite(self.transform(frames))   # (T, C, H, W) float
        return out.permute(1, 0, 2, 3).contiguous()   # (C, T, H, W)


@registry.register_processor("video_eval")
class VideoEvalProcessor(_VideoProcessor):
    """Squash-resize every frame to `image_size`, bicubic."""

    def __init__(self, image_size: int = 224, n_frms: int = 4, mean=None, std=None) -> None:
        super().__init__(image_size, n_frms, mean, std)
        T = transforms_v2()
        self.transform = T.Compose([
            T.Resize((self.image_size, self.image_size), interpolation=bicubic(), antialias=True),
            T.ToDtype(torch.float32, scale=True), self.normalize])


@registry.register_processor("video_train")
class VideoTrainProcessor(_VideoProcessor):
    """One RandomResizedCrop + flip shared by all frames of a clip (torchvision v2
    transforms on the (T, C, H, W) tensor draw once per clip)."""

    def __init__(self, image_size: int = 224, n_frms: int = 4, mean=None, std=None,
                 min_scale: float = 0.5, max_scale: float = 1.0) -> None:
        super().__init__(image_size, n_frms, mean, std)
        T = transforms_v2()
        self.transform = T.Compose([
            T.RandomResizedCrop(self.image_size, scale=(min_scale, max_scale),
                                interpolation=bicubic(), antialias=True),
            T.RandomHorizontalFlip(), T.ToDtype(torch.float32, scale=True), self.normalize])


# LAVIS's names for the same processors, so LAVIS dataset configs port unchanged
registry.register_processor("alpro_video_eval")(VideoEvalProcessor)
registry.register_processor("alpro_video_train")(VideoTrainProcessor)

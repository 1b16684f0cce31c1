"""Video processors: N frames sampled uniformly (read with PyAV by seeking,
`video_reading`), output (C, T, H, W), so the video datasets reach the model as a few
frames per clip. PyAV and torchvision are imported when first needed, so looking
processors up stays cheap.
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
from lavis_ib.processors.video_reading import FrameSampler, open_video, uniform_frame_indices

__all__ = ["read_video_frames", "uniform_frame_indices", "VideoEvalProcessor", "VideoTrainProcessor"]


def read_video_frames(path: str, n_frames: int = 4, stats: dict | None = None) -> torch.Tensor:
    """(T, C, H, W) uint8 frames of `path`, sampled uniformly (`uniform_frame_indices` of
    the frame count), each reached by seeking (`video_reading.FrameSampler`).

    The file is opened as a Python file object (no URL or protocol string reaches FFmpeg)
    with the demuxers and decoders of `media_limits()` only, and every other file a
    container asks for is refused. `stats`, when given, receives the number of frames
    decoded and seeks made.

    Raises:
        DataError: the file is missing, refused (format, codec, size, duration, frame
            count, decoding work over `media_limits()`), or cannot be decoded; one line.
    """
    from lavis_ib.processors.media_limits import media_limits

    if not os.path.isfile(path):
        raise DataError(f"video '{path}' does not exist.")
    import av

    limits = media_limits()
    sampler = None
    try:
        with open(path, "rb") as file, open_video(file, path, limits) as container:
            sampler = FrameSampler(container, path, limits)
            frames = sampler.sample(n_frames)
    except DataError:
        raise
    except Exception as exc:   # any decoder error on an untrusted file is this file's fault
        text = " ".join(str(exc).split()) or type(exc).__name__
        if not isinstance(exc, (av.error.FFmpegError, OSError, ValueError)):
            text = f"{type(exc).__name__}: {text}"
        raise DataError(f"video '{path}' cannot be decoded: {text}") from None
    finally:
        if stats is not None and sampler is not None:
            stats.update(decoded=sampler.decoded, seeks=sampler.seeks)
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()


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

"""Image and video files turned into model inputs with a model's eval image processor,
for the commands that take files from a user (prediction, the web demo). A missing,
unreadable, refused or oversized file (`media_limits`) is one `DataError` naming it."""
from __future__ import annotations

import os
from typing import Any, Sequence

from lavis_ib.common.errors import DataError
from lavis_ib.processors.media_limits import MediaLimits, media_limits, set_media_limits

__all__ = ["MediaLimits", "media_limits", "set_media_limits", "load_image", "load_images",
           "load_video", "video_processor_like"]


def load_image(path: str, processor: Any):
    """The processed tensor (C, H, W) of one image file."""
    from lavis_ib.processors.image import decode_image

    if not os.path.isfile(path):
        raise DataError(f"image '{path}' does not exist.")
    try:
        return processor(decode_image(path))
    except DataError as exc:
        raise DataError(f"image '{path}' is not a readable image: {exc}.") from None


def load_images(paths: Sequence[str], processor: Any):
    """The processed images of `paths`, stacked (B, C, H, W)."""
    import torch

    return torch.stack([load_image(path, processor) for path in paths])


def video_processor_like(image_processor: Any) -> Any:
    """The registered `video_eval` processor with the image processor's size, mean and std
    (the frames are sampled uniformly, as the video QA datasets are evaluated)."""
    from lavis_ib.common.registry import registry

    return registry.get_processor_class("video_eval")(
        image_size=image_processor.image_size, mean=image_processor.mean, std=image_processor.std)


def load_video(path: str, image_processor: Any):
    """The processed frames (C, T, H, W) of one video file."""
    if not os.path.isfile(path):
        raise DataError(f"video '{path}' does not exist.")
    return video_processor_like(image_processor)(path)

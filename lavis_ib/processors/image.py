"""Image processors for BLIP-family models, built from torchvision transforms.

Training: RandomResizedCrop (scale 0.5-1.0, bicubic) + horizontal flip, with RandAugment
for `blip_image_train` (FlanT5 recipe) and without for `blip2_image_train` (Vicuna recipe).
Evaluation: a bicubic resize to a square (aspect ratio not kept, as the checkpoints were
evaluated). CLIP mean/std by default.
"""
from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from lavis_ib.common.registry import registry
from lavis_ib.processors.base_processor import BaseProcessor

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BICUBIC = InterpolationMode.BICUBIC


def to_float_tensor() -> T.Compose:
    return T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True)])


class BlipImageBaseProcessor(BaseProcessor):
    """Shared pieces: the normalisation and RGB conversion."""

    def __init__(self, image_size: int = 224, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        self.image_size = int(image_size)
        self.mean = tuple(mean) if mean is not None else CLIP_MEAN
        self.std = tuple(std) if std is not None else CLIP_STD
        self.normalize = T.Normalize(self.mean, self.std)

    @staticmethod
    def _rgb(image):
        if isinstance(image, Image.Image) and image.mode != "RGB":
            return image.convert("RGB")
        return image

    def __call__(self, image) -> torch.Tensor:
        return self.transform(self._rgb(image))


@registry.register_processor("blip_image_eval")
class BlipImageEvalProcessor(BlipImageBaseProcessor):
    """Squash-resize to `image_size` with bicubic interpolation, then normalise."""

    def __init__(self, image_size: int = 224, mean=None, std=None) -> None:
        super().__init__(image_size, mean, std)
        self.transform = T.Compose([
            T.Resize((self.image_size, self.image_size), interpolation=BICUBIC, antialias=True),
            to_float_tensor(), self.normalize])


@registry.register_processor("blip2_image_train")
class Blip2ImageTrainProcessor(BlipImageBaseProcessor):
    """RandomResizedCrop + horizontal flip (no RandAugment)."""

    def __init__(self, image_size: int = 224, mean=None, std=None, min_scale: float = 0.5,
                 max_scale: float = 1.0) -> None:
        super().__init__(image_size, mean, std)
        self.transform = T.Compose([
            T.RandomResizedCrop(self.image_size, scale=(min_scale, max_scale),
                                interpolation=BICUBIC, antialias=True),
            T.RandomHorizontalFlip(), to_float_tensor(), self.normalize])


@registry.register_processor("blip_image_train")
class BlipImageTrainProcessor(BlipImageBaseProcessor):
    """RandomResizedCrop + horizontal flip + RandAugment (2 ops, magnitude 5)."""

    def __init__(self, image_size: int = 224, mean=None, std=None, min_scale: float = 0.5,
                 max_scale: float = 1.0, randaug_num_ops: int = 2,
                 randaug_magnitude: int = 5) -> None:
        super().__init__(image_size, mean, std)
        self.transform = T.Compose([
            T.RandomResizedCrop(self.image_size, scale=(min_scale, max_scale),
                                interpolation=BICUBIC, antialias=True),
            T.RandomHorizontalFlip(),
            T.RandAugment(num_ops=randaug_num_ops, magnitude=randaug_magnitude,
                          interpolation=BICUBIC),
            to_float_tensor(), self.normalize])

"""Image processors for BLIP-family models, built from torchvision transforms: the
training recipes of the released checkpoints (with LAVIS's RandomAugment for FlanT5,
without for Vicuna) and their evaluation resize, plus `decode_image`, the one image reader,
so a corrupt, refused (EPS...), 16-bit, float, non-finite or oversized image is handled the
same way everywhere.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from lavis_ib.common.errors import ConfigError, DataError
from lavis_ib.common.registry import registry
from lavis_ib.processors.base_processor import BaseProcessor
from lavis_ib.processors.random_augment import RandomAugment

# every processor's default normalisation (the BLIP-family checkpoints were trained with it)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def transforms_v2() -> Any:
    """torchvision's `transforms.v2`, imported when a processor is built, not with the
    module: the pre-flight looks processors up by name and reads their settings without
    paying for the import (seconds)."""
    from torchvision.transforms import v2

    return v2


def bicubic() -> Any:
    """torchvision's bicubic `InterpolationMode` (imported on first use)."""
    from torchvision.transforms import InterpolationMode

    return InterpolationMode.BICUBIC


_WIDE_INT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def to_rgb8(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of `image`: 16-bit grey is scaled (65535 -> 255), float images
    (mode F, e.g. a float TIFF) must be finite and in [0, 1], and are scaled by 255.
    Raises `DataError` for NaN/inf pixels or floats outside [0, 1]."""
    if image.mode in _WIDE_INT_MODES:
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8))
    elif image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():
            raise DataError("the image has NaN or infinite pixel values")
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if low < 0.0 or high > 1.0:
            raise DataError(f"the image has float pixel values from {low:g} to {high:g}; float "
                            f"images are read only in [0, 1] (scaled by 255): save it as 8-bit "
                            f"or scale it to [0, 1]")
        image = Image.fromarray(np.rint(values * 255.0).astype(np.uint8))
    return image.convert("RGB")   # a copy even for RGB: decodes fully before the file closes


def detected_image_format(path: Any, start: int = 0) -> str | None:
    """The PIL format whose signature the file's first bytes (from `start` in a file
    object) carry, any format PIL knows, allowed or not; None when none matches. Only the
    signature checks run, no format's opener."""
    try:
        if hasattr(path, "read"):
            where = path.tell()
            path.seek(start)
            prefix = path.read(16)
            path.seek(where)
        else:
            with open(path, "rb") as file:
                prefix = file.read(16)
    except (OSError, ValueError):
        return None
    Image.init()
    for name in Image.ID:
        accept = Image.OPEN[name][1]
        try:
            if accept is not None and accept(prefix) is True:
                return name
        except Exception:   # a signature check that cannot read 16 bytes
            continue
    return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, (OSError, ValueError, SyntaxError)) else \
        f"{type(exc).__name__}: {text}"


def decode_image(path: Any) -> Image.Image:
    """The fully decoded 8-bit RGB image at `path` (a file path or a binary file object):
    the one image reader of the datasets, of `predict` and of `serve`, so a faulty image
    fails the same way everywhere. Only the formats of `media_limits().image_formats` are
    opened (never EPS, whose reader runs Ghostscript).

    Raises:
        DataError: a format not allowed (named as detected), not an image, truncated,
            any other decoder error, more pixels than `media_limits().max_image_pixels`
            or PIL's own limit (a decompression bomb), NaN/inf pixels or floats outside
            [0, 1]; one line, no path (the caller names the sample).
    """
    from lavis_ib.processors.media_limits import media_limits

    limits = media_limits()
    start = path.tell() if hasattr(path, "tell") else 0
    try:
        with Image.open(path, formats=limits.image_formats) as image:
            width, height = image.size
            if width * height > limits.max_image_pixels:
                raise DataError(f"too many pixels (a decompression bomb?): {width}x{height} is "
                                f"{width * height} pixels, over the limit of "
                                f"{limits.max_image_pixels} (media limit max_image_pixels)")
            return to_rgb8(image)   # a full decode: truncation shows here
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(f"too many pixels (a decompression bomb?): {exc}") from None
    except UnidentifiedImageError:
        allowed = ", ".join(limits.image_formats)
        found = detected_image_format(path, start)
        if found is not None and found not in limits.image_formats:
            raise DataError(f"its format is {found} (detected from its first bytes), which "
                            f"lavis_ib does not open (allowed: {allowed}); convert it to PNG "
                            f"or JPEG") from None
        raise DataError(f"cannot be decoded: not an image in a format lavis_ib opens "
                        f"({allowed})") from None
    except Exception as exc:   # any decoder error on an untrusted file is this file's fault
        raise DataError(f"cannot be decoded: {_one_line(exc)}") from None


def check_finite(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor`, or a `DataError` when any value is NaN or infinite: every processor checks
    its output, since a NaN image would give NaN scores and empty generations, silently."""
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        raise DataError("the processed image has NaN or infinite values")
    return tensor


def to_float_tensor() -> Any:
    T = transforms_v2()
    return T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True)])


class BlipImageBaseProcessor(BaseProcessor):
    """Shared pieces: the normalisation and RGB conversion."""

    def __init__(self, image_size: int = 224, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        self.image_size = int(image_size)
        self.mean = tuple(mean) if mean is not None else CLIP_MEAN
        self.std = tuple(std) if std is not None else CLIP_STD
        self.normalize = transforms_v2().Normalize(self.mean, self.std)

    @staticmethod
    def _rgb(image):
        if isinstance(image, Image.Image) and image.mode != "RGB":
            return to_rgb8(image)
        return image

    def __call__(self, image) -> torch.Tensor:
        return check_finite(self.transform(self._rgb(image)))


@registry.register_processor("blip_image_eval")
class BlipImageEvalProcessor(BlipImageBaseProcessor):
    """Squash-resize to `image_size` with bicubic interpolation (the aspect ratio is not
    kept, as the checkpoints were evaluated), then normalise."""

    def __init__(self, image_size: int = 224, mean=None, std=None) -> None:
        super().__init__(image_size, mean, std)
        T = transforms_v2()
        self.transform = T.Compose([
            T.Resize((self.image_size, self.image_size), interpolation=bicubic(), antialias=True),
            to_float_tensor(), self.normalize])


@registry.register_processor("blip2_image_train")
class Blip2ImageTrainProcessor(BlipImageBaseProcessor):
    """RandomResizedCrop (scale 0.5-1.0, bicubic) + horizontal flip, no augmentation: the
    Vicuna recipe."""

    def __init__(self, image_size: int = 224, mean=None, std=None, min_scale: float = 0.5,
                 max_scale: float = 1.0) -> None:
        super().__init__(image_size, mean, std)
        T = transforms_v2()
        self.transform = T.Compose([
            T.RandomResizedCrop(self.image_size, scale=(min_scale, max_scale),
                                interpolation=bicubic(), antialias=True),
            T.RandomHorizontalFlip(), to_float_tensor(), self.normalize])


@registry.register_processor("blip_image_train")
class BlipImageTrainProcessor(BlipImageBaseProcessor):
    """RandomResizedCrop (scale 0.5-1.0, bicubic) + horizontal flip + an augmentation of 2
    ops at magnitude 5, on the PIL crop before the tensor conversion: the FlanT5 recipe.

    `randaug: lavis` (default) is LAVIS's RandomAugment, with which the FlanT5 checkpoints
    were trained (lavis_ib.processors.random_augment; magnitude 0-10); `randaug:
    torchvision` is torchvision's RandAugment (14 ops, magnitude 0-30, always applied),
    kept for runs that ask for it by name. `randaug_autocontrast` (randaug: lavis only):
    `lavis` (default) is LAVIS's AutoContrast, uint8 overflow included; `corrected` is PIL's.
    """

    def __init__(self, image_size: int = 224, mean=None, std=None, min_scale: float = 0.5,
                 max_scale: float = 1.0, randaug: str = "lavis", randaug_num_ops: int = 2,
                 randaug_magnitude: int = 5, randaug_autocontrast: str = "lavis") -> None:
        super().__init__(image_size, mean, std)
        T = transforms_v2()
        if randaug == "lavis":
            augment = RandomAugment(num_ops=randaug_num_ops, level=randaug_magnitude,
                                    autocontrast=randaug_autocontrast)
        elif randaug == "torchvision":
            augment = T.RandAugment(num_ops=randaug_num_ops, magnitude=randaug_magnitude,
                                    interpolation=bicubic())
        else:
            raise ConfigError(f"blip_image_train: randaug '{randaug}' is not known; use "
                              f"'lavis' (LAVIS's RandomAugment, default) or 'torchvision'.")
        self.randaug = randaug
        self.transform = T.Compose([
            T.RandomResizedCrop(self.image_size, scale=(min_scale, max_scale),
                                interpolation=bicubic(), antialias=True),
            T.RandomHorizontalFlip(), augment, to_float_tensor(), self.normalize])

"""LAVIS's `RandomAugment` (the FlanT5 training recipe) on PIL images, with torchvision's
functional ops, every random draw from torch's global RNG: the released FlanT5 checkpoints
were trained with LAVIS's own augmentation, not torchvision's `RandAugment`, so the recipe
needs it. Its facts are on `RandomAugment`, `magnitude` and `apply_op` (docs/protocol.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from PIL import Image

from lavis_ib.common.errors import ConfigError

MAX_LEVEL = 10
TRANSLATE_CONST = 10
FILL = (128, 128, 128)
APPLY_PROB = 0.5
# LAVIS's list for the FlanT5 recipe, in its order (blip_processors.BlipImageTrainProcessor)
LAVIS_OPS = ("Identity", "AutoContrast", "Brightness", "Sharpness", "Equalize",
             "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
_SIGNED = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
#: AutoContrast's versions: LAVIS's (overflow included; the default, as the FlanT5 models
#: were trained) and the corrected one (PIL's ImageOps.autocontrast)
AUTOCONTRASTS = ("lavis", "corrected")


def magnitude(name: str, level: float) -> float | None:
    """The unsigned argument of op `name` at `level` (0..MAX_LEVEL); None for ops
    without one. LAVIS's level-to-argument rules: at level 5 rotate is 15 degrees, shear
    0.15, translate 5 px, and the Brightness and Sharpness factors are 1.0 (the identity,
    as in LAVIS)."""
    if name in ("Identity", "AutoContrast", "Equalize"):
        return None
    if name in ("Brightness", "Sharpness"):
        return level / MAX_LEVEL * 1.8 + 0.1
    if name in ("ShearX", "ShearY"):
        return level / MAX_LEVEL * 0.3
    if name in ("TranslateX", "TranslateY"):
        return level / MAX_LEVEL * float(TRANSLATE_CONST)
    if name == "Rotate":
        return level / MAX_LEVEL * 30.0
    raise ConfigError(f"unknown RandomAugment op '{name}'; known: {', '.join(LAVIS_OPS)}.")


def lavis_autocontrast(image: Image.Image) -> Image.Image:
    """LAVIS's AutoContrast on an 8-bit image, overflow included.

    Per channel, values are stretched from [lo, hi] to [0, 255] (truncated) with the offset
    that LAVIS computes from the channel minimum as a uint8, whose negation wraps: -lo is
    256 - lo for lo > 0. So a channel whose minimum is 0 gets the correct stretch, a constant
    channel is left as it is, and every other channel turns 255 (white) throughout.
    """
    if image.mode not in ("L", "RGB"):
        raise TypeError(f"AutoContrast works on 8-bit L or RGB images; got mode {image.mode}.")
    extrema = image.getextrema()
    table: list[int] = []
    for lo, hi in ([extrema] if image.mode == "L" else extrema):
        if hi <= lo:
            table += range(256)
            continue
        scale = 255 / (hi - lo)
        offset = ((256 - lo) % 256) * scale   # LAVIS's `-low * scale` with a uint8 `low`
        table += [int(min(max(i * scale + offset, 0.0), 255.0)) for i in range(256)]
    return image.point(table)


def apply_op(image: Image.Image, name: str, arg: float | None,
             autocontrast: str = "lavis") -> Image.Image:
    """`image` with op `name` applied with argument `arg` (signed: `RandomAugment.draw`);
    `autocontrast` picks AutoContrast's version (`AUTOCONTRASTS`).

    The geometry follows LAVIS's OpenCV matrices in pixel-index coordinates: ShearX maps
    (x, y) -> (x + f*y, y) and ShearY (x, y) -> (x, y + f*x) about the top-left pixel;
    TranslateX/Y by +d moves the content d px left/up; Rotate by +a degrees turns the
    content counter-clockwise about pixel (W/2, H/2); bilinear sampling, fill `FILL`.
    AutoContrast is LAVIS's (`lavis_autocontrast`) or, `corrected`, PIL's
    `ImageOps.autocontrast` without cutoff; Equalize is PIL's `ImageOps.equalize` (LAVIS's
    OpenCV version is written to give PIL's output); Brightness and Sharpness are PIL's
    enhancers. Known sub-pixel differences from LAVIS: PIL's bilinear sampler (float
    weights) against OpenCV's (1/32-px fixed point), and how each blends the fill into the
    outermost pixels."""
    # torchvision on first use: looking processors up (the pre-flight) does not import it
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    BILINEAR = InterpolationMode.BILINEAR
    if name == "Identity":
        return image
    if name == "AutoContrast":
        if autocontrast == "lavis":
            return lavis_autocontrast(image)
        return F.autocontrast(image)
    if name == "Equalize":
        return F.equalize(image)
    if name == "Brightness":
        return F.adjust_brightness(image, arg)
    if name == "Sharpness":
        return F.adjust_sharpness(image, arg)
    if name == "Rotate":
        width, height = image.size
        # PIL puts pixel centres at +0.5: OpenCV's pixel (W/2, H/2) is (W/2 + .5, H/2 + .5)
        return F.rotate(image, arg, interpolation=BILINEAR,
                        center=[width / 2 + 0.5, height / 2 + 0.5], fill=list(FILL))
    if name in ("ShearX", "ShearY"):
        # torchvision's shear angle s maps x -> x - tan(s) y; about the first pixel centre
        degrees = math.degrees(math.atan(-arg))
        shear = [degrees, 0.0] if name == "ShearX" else [0.0, degrees]
        return F.affine(image, angle=0.0, translate=[0, 0], scale=1.0, shear=shear,
                        interpolation=BILINEAR, fill=list(FILL), center=[0.5, 0.5])
    if name in ("TranslateX", "TranslateY"):
        shift = [-arg, 0.0] if name == "TranslateX" else [0.0, -arg]
        return F.affine(image, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0],
                        interpolation=BILINEAR, fill=list(FILL))
    raise ConfigError(f"unknown RandomAugment op '{name}'; known: {', '.join(LAVIS_OPS)}.")


@dataclass(frozen=True)
class Step:
    """One drawn op: its name, whether it runs, and its signed argument when it runs."""
    name: str
    applied: bool
    arg: float | None = None


class RandomAugment:
    """LAVIS's ``RandomAugment(num_ops, level, isPIL=True, augs=ops)`` on PIL images;
    `autocontrast` is one of `AUTOCONTRASTS`.

    Not torchvision's `RandAugment`: the released FlanT5 checkpoints were trained with
    LAVIS's own augmentation, which differs in every respect that matters to the image
    statistics: 10 ops instead of 14 (`LAVIS_OPS`), each of the drawn ops applied only with
    probability 0.5, magnitudes on a 0-10 scale (`magnitude`), grey fill 128. The semantics
    are read from LAVIS's lavis/processors/randaugment.py and written anew here (the draws
    on `draw`, the ops on `apply_op`).

    Every draw comes from torch's global RNG (`torch.randint`, `torch.rand`), so the
    dataset's per-sample forked generator (`lavis_ib.datasets.datasets.base.seeded_torch`)
    makes a sample's augmentation a function of (seed, epoch, dataset, index).
    """

    def __init__(self, num_ops: int = 2, level: float = 5, ops: Sequence[str] = LAVIS_OPS,
                 autocontrast: str = "lavis"):
        if autocontrast not in AUTOCONTRASTS:
            raise ConfigError(f"randaug_autocontrast '{autocontrast}' is not known; use one of "
                              f"{', '.join(AUTOCONTRASTS)} (lavis: LAVIS's, overflow included).")
        if not 0 <= level <= MAX_LEVEL:
            raise ConfigError(f"RandomAugment level {level} is outside 0..{MAX_LEVEL}; "
                              f"set randaug_magnitude between 0 and {MAX_LEVEL} (LAVIS: 5).")
        if int(num_ops) < 0:
            raise ConfigError(f"randaug_num_ops must be >= 0, got {num_ops}.")
        for name in ops:
            magnitude(name, level)   # rejects an unknown name
        self.num_ops, self.level, self.ops = int(num_ops), level, tuple(ops)
        self.autocontrast = autocontrast

    def draw(self) -> list[Step]:
        """The random plan of one image, in LAVIS's order of draws: `num_ops` op names
        first, drawn uniformly *with replacement*; then per op one uniform draw decides
        whether it runs (probability `APPLY_PROB`), and only an op that runs draws its sign
        (rotate, shear, translate: each sign with probability 0.5)."""
        picks = torch.randint(len(self.ops), (self.num_ops,)).tolist()
        plan = []
        for index in picks:
            name = self.ops[index]
            if torch.rand(()).item() > APPLY_PROB:
                plan.append(Step(name, False))
                continue
            arg = magnitude(name, self.level)
            if name in _SIGNED and torch.rand(()).item() < 0.5:
                arg = -arg
            plan.append(Step(name, True, arg))
        return plan

    def __call__(self, image: Image.Image) -> Image.Image:
        if not isinstance(image, Image.Image):
            raise TypeError(f"RandomAugment works on PIL images (LAVIS's isPIL=True); got "
                            f"{type(image).__name__}: put it before the tensor conversion.")
        for step in self.draw():
            if step.applied:
                image = apply_op(image, step.name, step.arg, self.autocontrast)
        return image

    def __repr__(self) -> str:
        return (f"RandomAugment(num_ops={self.num_ops}, level={self.level}, ops={self.ops}, "
                f"autocontrast={self.autocontrast})")

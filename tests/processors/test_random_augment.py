"""LAVIS's RandomAugment (FlanT5 training recipe) against LAVIS's values written out here
as data, and each op against a numpy reference written from the op's description: the
tone ops exactly (AutoContrast as LAVIS computes it, uint8 overflow included, and the
corrected one), the geometric ops as OpenCV's warpAffine describes its sampling (LAVIS's
matrices), within a stated tolerance; marker pixels for the directions."""
import math
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

from lavis_ib.common.errors import ConfigError
from lavis_ib.datasets.datasets.base import augment_seed, seeded_torch
from lavis_ib.processors import build_processor
from lavis_ib.processors import random_augment as ra
from lavis_ib.processors.image import CLIP_MEAN, CLIP_STD

# --- LAVIS's values (lavis/processors/randaugment.py, blip_processors.py), as data ---
LAVIS_FLANT5_OPS = ["Identity", "AutoContrast", "Brightness", "Sharpness", "Equalize",
                    "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"]
LAVIS_NUM_OPS, LAVIS_LEVEL, LAVIS_MAX_LEVEL, LAVIS_TRANSLATE_CONST = 2, 5, 10, 10
LAVIS_PROB, LAVIS_FILL = 0.5, (128, 128, 128)
# unsigned argument per op at levels 5 (the recipe), 10 and 0; None = op takes none
LAVIS_ARGS = {
    5: {"Identity": None, "AutoContrast": None, "Equalize": None, "Brightness": 1.0,
        "Sharpness": 1.0, "ShearX": 0.15, "ShearY": 0.15, "TranslateX": 5.0,
        "TranslateY": 5.0, "Rotate": 15.0},
    10: {"Brightness": 1.9, "Sharpness": 1.9, "ShearX": 0.3, "ShearY": 0.3,
         "TranslateX": 10.0, "TranslateY": 10.0, "Rotate": 30.0},
    0: {"Brightness": 0.1, "Sharpness": 0.1, "ShearX": 0.0, "TranslateX": 0.0, "Rotate": 0.0},
}
SIGNED = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def plans():
    torch.manual_seed(1234)
    aug = ra.RandomAugment()
    return [aug.draw() for _ in range(20000)]


def test_constants_and_level_to_argument_table():
    assert list(ra.LAVIS_OPS) == LAVIS_FLANT5_OPS
    assert (ra.MAX_LEVEL, ra.TRANSLATE_CONST) == (LAVIS_MAX_LEVEL, LAVIS_TRANSLATE_CONST)
    assert ra.APPLY_PROB == LAVIS_PROB and tuple(ra.FILL) == LAVIS_FILL
    aug = ra.RandomAugment()
    assert (aug.num_ops, aug.level) == (LAVIS_NUM_OPS, LAVIS_LEVEL)
    for level, table in LAVIS_ARGS.items():
        for name, expected in table.items():
            got = ra.magnitude(name, level)
            assert got == (None if expected is None else pytest.approx(expected)), (level, name)


def test_drawn_arguments_at_level_5_are_the_table_with_a_sign(plans):
    seen = {name: set() for name in LAVIS_FLANT5_OPS}
    for plan in plans:
        assert len(plan) == LAVIS_NUM_OPS
        for step in plan:
            if not step.applied:
                assert step.arg is None
                continue
            seen[step.name].add(None if step.arg is None else round(step.arg, 12))
    for name, value in LAVIS_ARGS[LAVIS_LEVEL].items():
        want = {value} if value is None or name not in SIGNED else {value, -value}
        assert seen[name] == want, name


def test_two_ops_with_replacement_each_applied_with_probability_half(plans):
    steps = [step for plan in plans for step in plan]
    counts = {name: 0 for name in LAVIS_FLANT5_OPS}
    for step in steps:
        counts[step.name] += 1
    for name, count in counts.items():
        assert abs(count / len(steps) - 0.1) < 0.01, (name, count)
    # with replacement: both draws name the same op in about 1 plan in 10
    repeats = np.mean([plan[0].name == plan[1].name for plan in plans])
    assert abs(repeats - 0.1) < 0.01
    assert abs(np.mean([s.applied for s in steps]) - LAVIS_PROB) < 0.01
    signs = [s.arg > 0 for s in steps if s.applied and s.name in SIGNED]
    assert abs(np.mean(signs) - 0.5) < 0.02


def _cv2_forward(name, arg, width, height):
    """LAVIS's OpenCV forward matrix (pixel-index coordinates) for a geometric op."""
    if name == "ShearX":
        return np.array([[1, arg, 0], [0, 1, 0]], float)
    if name == "ShearY":
        return np.array([[1, 0, 0], [arg, 1, 0]], float)
    if name == "TranslateX":
        return np.array([[1, 0, -arg], [0, 1, 0]], float)
    if name == "TranslateY":
        return np.array([[1, 0, 0], [0, 1, -arg]], float)
    # cv2.getRotationMatrix2D((W/2, H/2), angle, 1), as OpenCV documents it
    a, b = math.cos(math.radians(arg)), math.sin(math.radians(arg))
    cx, cy = width / 2, height / 2
    return np.array([[a, b, (1 - a) * cx - b * cy], [-b, a, b * cx + (1 - a) * cy]])


def _warp_reference(pixels, forward, fill=LAVIS_FILL):
    """warpAffine as OpenCV describes it: output pixel (x, y) samples the input at the
    inverse of `forward` applied to (x, y), in pixel-index coordinates, bilinearly from its
    four neighbours; a neighbour outside the image takes the border value `fill`; rounded
    to the nearest integer. Also returns the band: pixels whose weighted neighbours lie
    partly inside and partly outside the image."""
    height, width, channels = pixels.shape
    inverse = np.linalg.inv(forward[:, :2])
    ys, xs = np.mgrid[0:height, 0:width]
    sx, sy = inverse @ np.stack([xs.ravel() - forward[0, 2], ys.ravel() - forward[1, 2]])
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    fx, fy = sx - x0, sy - y0
    out = np.zeros((height * width, channels))
    inside_count, outside_count = np.zeros(height * width, int), np.zeros(height * width, int)
    for dx, dy, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                           (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xx, yy = x0 + dx, y0 + dy
        inside = (xx >= 0) & (xx < width) & (yy >= 0) & (yy < height)
        value = np.tile(np.asarray(fill, float), (height * width, 1))
        value[inside] = pixels[yy[inside], xx[inside]]
        out += weight[:, None] * value
        inside_count += inside & (weight > 0)
        outside_count += ~inside & (weight > 0)
    band = (inside_count > 0) & (outside_count > 0)
    rounded = np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)
    return rounded.reshape(height, width, channels), band.reshape(height, width)


def _geometry_images():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    ys, xs = np.mgrid[0:48, 0:64]
    ramp = np.stack([xs * 4, ys * 5, (xs + ys) * 2], -1).clip(0, 255).astype(np.uint8)
    return noise, ramp


@pytest.mark.parametrize("name", sorted(SIGNED))
def test_geometric_ops_equal_the_warp_description_within_the_tolerance(name):
    """Tolerance: outside the band, |ours - reference| <= 1 (PIL's bilinear sampler truncates
    where the description rounds; LAVIS's OpenCV also quantises sampling positions to 1/32
    px, which the reference does not model); Translate by whole pixels is exact. In the band
    (at most one pixel wide, W + H pixels here) PIL and OpenCV blend the fill differently,
    so values there are not compared. A wrong convention (direction, centre, half-pixel
    offset) puts differences of tens of levels everywhere outside the band."""
    for pixels in _geometry_images():
        height, width = pixels.shape[:2]
        for sign in (1, -1):
            arg = sign * LAVIS_ARGS[5][name]
            ours = np.asarray(ra.apply_op(Image.fromarray(pixels), name, arg)).astype(int)
            ref, band = _warp_reference(pixels, _cv2_forward(name, arg, width, height))
            diff = np.abs(ours - ref.astype(int))
            assert diff[~band].max() <= 1, (name, arg)
            assert band.sum() <= width + height, (name, arg, band.sum())
            if name.startswith("Translate"):
                assert not band.any() and diff.max() == 0


def test_the_warp_reference_detects_a_wrong_convention():
    pixels = _geometry_images()[1]
    height, width = pixels.shape[:2]
    ours = np.asarray(ra.apply_op(Image.fromarray(pixels), "Rotate", 15.0)).astype(int)
    wrong, band = _warp_reference(pixels, _cv2_forward("Rotate", -15.0, width, height))
    assert np.abs(ours - wrong.astype(int))[~band].max() > 20


def _marker(width=12, height=10, at=(7, 3)):
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[at[1], at[0]] = 255
    return Image.fromarray(pixels)


def _where(image):
    ys, xs = np.nonzero(np.asarray(image)[..., 0] > 200)
    return list(zip(xs.tolist(), ys.tolist()))


def test_op_directions_on_a_marker_pixel():
    # (7, 3) -> TranslateX +5 moves content left, ShearX f: x + f*y, ShearY f: y + f*x,
    # Rotate +90 turns counter-clockwise about pixel (6, 5): (7, 3) -> (4, 4)
    assert _where(ra.apply_op(_marker(), "TranslateX", 5.0)) == [(2, 3)]
    assert _where(ra.apply_op(_marker(), "TranslateY", -5.0)) == [(7, 8)]
    assert _where(ra.apply_op(_marker(), "ShearX", 1.0)) == [(10, 3)]
    assert _where(ra.apply_op(_marker(at=(2, 3)), "ShearY", 2.0)) == [(2, 7)]
    assert _where(ra.apply_op(_marker(), "Rotate", 90.0)) == [(4, 4)]
    filled = np.asarray(ra.apply_op(_marker(), "TranslateX", 5.0))
    assert (filled[:, -5:] == 128).all()


# -- tone ops: numpy references from each op's description ----------------------------------
def _per_channel(pixels, table_of):
    """Apply, channel by channel, the look-up table `table_of(channel)` returns."""
    out = np.empty_like(pixels)
    for c in range(pixels.shape[-1]):
        out[..., c] = table_of(pixels[..., c])[pixels[..., c]]
    return out


def _autocontrast_table(channel, lavis):
    """Stretch [lo, hi] to [0, 255]: value * scale + offset, cut to [0, 255], truncated;
    scale = 255 / (hi - lo), offset = -lo * scale, where LAVIS negates lo as a uint8, so
    that -lo is 256 - lo for lo > 0. A constant channel keeps its values."""
    lo, hi = int(channel.min()), int(channel.max())
    if hi <= lo:
        return np.arange(256, dtype=np.uint8)
    scale = 255 / (hi - lo)
    negated = (256 - lo) % 256 if lavis else -lo
    return np.clip(np.arange(256) * scale + negated * scale, 0, 255).astype(np.uint8)


def _equalize_table(channel):
    """Histogram equalisation as PIL documents it: step = (count of all pixels but those of
    the highest value present) // 255; none when step is 0; value v maps to
    (step // 2 + count of pixels below v) // step."""
    hist = np.bincount(channel.ravel(), minlength=256)
    present = hist[hist > 0]
    step = (present.sum() - present[-1]) // 255
    if step == 0:
        return np.arange(256, dtype=np.uint8)
    below = np.concatenate([[0], np.cumsum(hist)[:-1]])
    return np.clip((step // 2 + below) // step, 0, 255).astype(np.uint8)


def _brightness(pixels, factor):
    """Every value times the factor (float32), cut to [0, 255], truncated."""
    return np.clip(pixels.astype(np.float32) * np.float32(factor), 0, 255).astype(np.uint8)


def _sharpness(pixels, factor):
    """Blend with the smoothed image: inner pixels smoothed by the 3x3 kernel (1 around, 5
    in the centre, / 13) and rounded, the outermost pixels left as they are; out =
    smoothed + factor * (image - smoothed) in float32, cut to [0, 255], truncated."""
    height, width = pixels.shape[:2]
    values = pixels.astype(np.float64)
    kernel = np.ones((3, 3))
    kernel[1, 1] = 5
    smoothed = values.copy()
    smoothed[1:-1, 1:-1] = np.floor(sum(
        kernel[dy, dx] * values[dy:height - 2 + dy, dx:width - 2 + dx]
        for dy in range(3) for dx in range(3)) / 13 + 0.5)
    smoothed = smoothed.astype(np.float32)
    out = smoothed + np.float32(factor) * (pixels.astype(np.float32) - smoothed)
    return np.clip(out, 0, 255).astype(np.uint8)


def _tone_images():
    """Channels with minimum 0, with minimum > 0, constant, skewed and full-range ones."""
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
    low = base // 3 + 40                                   # every channel: min > 0
    mixed = base.copy()
    mixed[..., 0] = base[..., 0] // 2                       # min 0 (some value is 0)
    mixed[0, 0, 0] = 0
    mixed[..., 1] = base[..., 1] // 4 + 100                 # min > 0
    mixed[..., 2] = 77                                      # constant
    skewed = (base.astype(float) ** 2 / 255).astype(np.uint8)
    dark = (base // 8 + 1).astype(np.uint8)                 # min 1: narrow range
    full = base.copy()
    full[0, 0], full[0, 1] = 0, 255
    return {"low": low, "mixed": mixed, "skewed": skewed, "dark": dark, "full": full}


@pytest.mark.parametrize("kind", sorted(_tone_images()))
def test_tone_ops_equal_their_descriptions_exactly(kind):
    pixels = _tone_images()[kind]
    image = Image.fromarray(pixels)
    assert ra.apply_op(image, "Identity", None) is image
    lavis = np.asarray(ra.apply_op(image, "AutoContrast", None))
    assert np.array_equal(lavis, _per_channel(pixels, lambda ch: _autocontrast_table(ch, True)))
    corrected = np.asarray(ra.apply_op(image, "AutoContrast", None, autocontrast="corrected"))
    assert np.array_equal(corrected,
                          _per_channel(pixels, lambda ch: _autocontrast_table(ch, False)))
    assert np.array_equal(np.asarray(ra.apply_op(image, "Equalize", None)),
                          _per_channel(pixels, _equalize_table))
    for level in range(LAVIS_MAX_LEVEL + 1):   # level 5 (the recipe): factor 1.0, identity
        factor = ra.magnitude("Brightness", level)
        assert np.array_equal(np.asarray(ra.apply_op(image, "Brightness", factor)),
                              _brightness(pixels, factor)), level
        assert np.array_equal(np.asarray(ra.apply_op(image, "Sharpness", factor)),
                              _sharpness(pixels, factor)), level
    for name in ("Brightness", "Sharpness"):
        out = ra.apply_op(image, name, LAVIS_ARGS[5][name])
        assert np.array_equal(np.asarray(out), pixels), name


def test_lavis_autocontrast_whitens_every_channel_whose_minimum_is_above_zero():
    """The overflow, stated as what it does to an image: a channel with minimum > 0 (and
    not constant) becomes 255 everywhere; minimum 0 is stretched correctly; constant kept."""
    pixels = _tone_images()["mixed"]
    out = np.asarray(ra.apply_op(Image.fromarray(pixels), "AutoContrast", None))
    assert (out[..., 1] == 255).all()
    assert out[..., 0].min() == 0 and out[..., 0].max() >= 254 and len(np.unique(out[..., 0])) > 50
    assert (out[..., 2] == 77).all()
    corrected = np.asarray(ra.apply_op(Image.fromarray(pixels), "AutoContrast", None,
                                       autocontrast="corrected"))
    assert np.array_equal(corrected[..., 0], out[..., 0])
    assert corrected[..., 1].min() == 0 and corrected[..., 1].max() >= 254
    grey = Image.fromarray(pixels[..., 1])                  # an L image: the same rule
    assert np.array_equal(np.asarray(ra.apply_op(grey, "AutoContrast", None)), out[..., 1])


def test_autocontrast_setting_reaches_the_processor():
    pixels = _tone_images()["low"]
    default = build_processor({"name": "blip_image_train", "image_size": 20})
    corrected = build_processor({"name": "blip_image_train", "image_size": 20,
                                 "randaug_autocontrast": "corrected"})
    augments = [[t for t in p.transform.transforms if isinstance(t, ra.RandomAugment)][0]
                for p in (default, corrected)]
    assert [a.autocontrast for a in augments] == ["lavis", "corrected"]
    only = ra.RandomAugment(num_ops=1, level=5, ops=["AutoContrast"])
    outs = set()
    for seed in range(8):          # applied with probability 1/2: both outcomes appear
        torch.manual_seed(seed)
        outs.add(np.asarray(only(Image.fromarray(pixels))).tobytes())
    assert outs == {pixels.tobytes(), np.full_like(pixels, 255).tobytes()}
    with pytest.raises(ConfigError, match="randaug_autocontrast 'pil' is not known"):
        build_processor({"name": "blip_image_train", "randaug_autocontrast": "pil"})


def test_same_torch_seed_same_image_whatever_python_and_numpy_rngs(image):
    aug = ra.RandomAugment()
    outs = []
    for seed in range(6):
        random.seed(seed), np.random.seed(seed)
        with seeded_torch(augment_seed(7, 0, 3, 11)):
            outs.append(np.asarray(aug(image)))
    assert all(np.array_equal(outs[0], o) for o in outs[1:])
    distinct = set()
    for index in range(12):
        with seeded_torch(augment_seed(7, 0, 3, index)):
            distinct.add(np.asarray(aug(image)).tobytes())
    assert len(distinct) > 3


def test_processor_output_and_order(image):
    proc = build_processor({"name": "blip_image_train", "image_size": 20})
    assert proc.randaug == "lavis"
    hand = v2.Compose([
        v2.RandomResizedCrop(20, scale=(0.5, 1.0), interpolation=InterpolationMode.BICUBIC,
                             antialias=True),
        v2.RandomHorizontalFlip(), ra.RandomAugment(2, 5), v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(CLIP_MEAN, CLIP_STD)])
    for seed in range(4):
        torch.manual_seed(seed)
        ours = proc(image)
        torch.manual_seed(seed)
        torch.testing.assert_close(ours, hand(image), rtol=0, atol=0)
        assert ours.shape == (3, 20, 20) and ours.dtype == torch.float32
    # a grey-128 image is left as it is by every op (fill 128): the normalised constant
    grey = Image.new("RGB", (30, 26), LAVIS_FILL)
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    want = ((torch.full((3, 1, 1), 128 / 255.0) - mean) / std).expand(3, 20, 20)
    for seed in range(8):
        torch.manual_seed(seed)
        torch.testing.assert_close(proc(grey), want, atol=1e-6, rtol=0)


def test_config_errors():
    with pytest.raises(ConfigError, match="randaug 'auto' is not known.*'torchvision'"):
        build_processor({"name": "blip_image_train", "randaug": "auto"})
    with pytest.raises(ConfigError, match="outside 0..10"):
        build_processor({"name": "blip_image_train", "randaug_magnitude": 11})
    with pytest.raises(ConfigError, match="unknown RandomAugment op 'Solarise'"):
        ra.RandomAugment(ops=["Solarise"])
    with pytest.raises(TypeError, match="PIL images"):
        ra.RandomAugment()(torch.zeros(3, 4, 4))

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF
from torchvision.transforms import v2

from lavis_ib.common.errors import ConfigError, DataError
from lavis_ib.common.registry import registry
from lavis_ib.processors import build_processor, build_processors
from lavis_ib.processors.image import CLIP_MEAN, CLIP_STD
from lavis_ib.common.prompts import ocr_prefix
from lavis_ib.processors.templates import (CAPTION_TEMPLATES, QG_TEMPLATES, VQA_TEMPLATES,
                                           InstructionTemplateProcessor)
from lavis_ib.processors.video import read_video_frames, uniform_frame_indices

MEAN = torch.tensor(CLIP_MEAN).view(3, 1, 1)
STD = torch.tensor(CLIP_STD).view(3, 1, 1)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))


def test_eval_processor_matches_torchvision_by_hand(image):
    proc = build_processor({"name": "blip_image_eval", "image_size": 24})
    out = proc(image)
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32
    ref = TF.resize(image, [24, 24], interpolation=InterpolationMode.BICUBIC, antialias=True)
    ref = TF.normalize(TF.to_tensor(ref), CLIP_MEAN, CLIP_STD)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


def test_eval_processor_converts_grayscale_and_custom_mean(image):
    proc = build_processor({"name": "blip_image_eval", "image_size": 16, "mean": [0.5] * 3,
                            "std": [0.5] * 3})
    out = proc(image.convert("L"))
    assert out.shape == (3, 16, 16)
    assert out.min() >= -1 - 1e-6 and out.max() <= 1 + 1e-6


def test_blip2_train_processor_normalises_crops_of_a_constant_image():
    colour = (200, 30, 90)
    flat = Image.new("RGB", (40, 30), colour)
    proc = build_processor({"name": "blip2_image_train", "image_size": 20})
    out = proc(flat)
    assert out.shape == (3, 20, 20) and out.dtype == torch.float32
    expected = ((torch.tensor(colour) / 255.0).view(3, 1, 1) - MEAN) / STD
    torch.testing.assert_close(out, expected.expand(3, 20, 20), atol=1e-5, rtol=0)


def test_train_processors_equal_hand_built_torchvision_pipelines(image):
    def hand(randaug):
        ops = [v2.RandomResizedCrop(20, scale=(0.5, 1.0), interpolation=InterpolationMode.BICUBIC,
                                    antialias=True), v2.RandomHorizontalFlip()]
        if randaug:
            ops.append(v2.RandAugment(num_ops=2, magnitude=5, interpolation=InterpolationMode.BICUBIC))
        ops += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(CLIP_MEAN, CLIP_STD)]
        return v2.Compose(ops)

    # torchvision's RandAugment only when asked for by name (LAVIS's is the default:
    # tests/processors/test_random_augment.py)
    for name, randaug in (("blip_image_train", True), ("blip2_image_train", False)):
        extra = {"randaug": "torchvision"} if randaug else {}
        proc = build_processor({"name": name, "image_size": 20, **extra})
        for seed in range(3):
            torch.manual_seed(seed)
            ours = proc(image)
            torch.manual_seed(seed)
            ref = hand(randaug)(image)
            torch.testing.assert_close(ours, ref)
        # unnormalised values stay within [0, 1]
        raw = ours * STD + MEAN
        assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5


def test_processor_config_errors():
    with pytest.raises(ConfigError, match="has no setting 'imagesize'.*Did you mean 'image_size'"):
        build_processor({"name": "blip_image_eval", "imagesize": 3})
    with pytest.raises(ConfigError, match="has no 'name'"):
        build_processor({"image_size": 3})
    with pytest.raises(Exception, match="Did you mean 'blip_image_eval'"):
        build_processor({"name": "blip_image_evl"})
    with pytest.raises(ConfigError, match="unknown entries"):
        build_processors({"train": None, "test": None})


def test_text_processors():
    caption = registry.get_processor_class("blip_caption").from_config({"max_words": 5})
    assert caption('A Dog (running)!  on "grass"; fast: very fast') == "a dog running on grass"
    assert caption("a.b") == "a b"
    question = registry.get_processor_class("blip_question").from_config(None)
    assert question("What is THIS (thing)?  ") == "what is this thing?"


def test_template_processor_draws_every_template_and_keeps_text():
    for family, templates in (("caption", CAPTION_TEMPLATES), ("vqa", VQA_TEMPLATES),
                              ("qg", QG_TEMPLATES)):
        proc = InstructionTemplateProcessor(family, seed=3)
        draws = {proc.draw(i, epoch=0) for i in range(400)}
        assert draws == set(range(len(templates)))
        for tid, template in enumerate(templates):
            out = proc.format(tid, question="What Is IT (really)?", answer="Two DOGS.")
            expected = template.replace("{question}", "what is it really?").replace(
                "{answer}", "two dogs")
            assert out == expected


def test_template_draw_is_a_function_of_seed_epoch_index():
    a = InstructionTemplateProcessor("vqa", seed=1)
    b = InstructionTemplateProcessor("vqa", seed=1)
    assert [a.draw(i, 0) for i in range(50)] == [b.draw(i, 0) for i in range(50)]
    assert [a.draw(i, 0) for i in range(50)] != [a.draw(i, 1) for i in range(50)]
    assert a(index=5, epoch=2, question="Why?") == b(index=5, epoch=2, question="Why?")
    with pytest.raises(ConfigError, match="unknown family"):
        InstructionTemplateProcessor("captions")


def test_ocr_prefix_keeps_first_30_tokens():
    tokens = [f"t{i}" for i in range(40)]
    prefix = ocr_prefix(tokens)
    assert prefix.startswith("OCR tokens: t0, t1,") and prefix.endswith("t29. ")
    assert "t30" not in prefix and ocr_prefix([]) == ""


def _write_video(path, n_frames=12, size=(48, 32)):
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=6)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(n_frames):
            value = int(i * 255 / (n_frames - 1))
            frame = np.full((size[1], size[0], 3), value, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_processor_decodes_uniform_frames(tmp_path):
    path = tmp_path / "clip.mp4"
    _write_video(path)
    assert uniform_frame_indices(12, 4) == [1, 4, 7, 10]
    frames = read_video_frames(str(path), 4)
    assert frames.shape == (4, 3, 32, 48) and frames.dtype == torch.uint8
    brightness = frames.float().mean(dim=(1, 2, 3))
    expected = torch.tensor([1, 4, 7, 10]) * 255 / 11
    assert torch.allclose(brightness, expected, atol=6), brightness
    for name in ("video_eval", "video_train", "alpro_video_eval"):
        out = build_processor({"name": name, "image_size": 16, "n_frms": 4})(str(path))
        assert out.shape == (3, 4, 16, 16) and out.dtype == torch.float32


def test_video_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_video_frames(str(tmp_path / "missing.mp4"))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    with pytest.raises(DataError, match="cannot be decoded"):
        read_video_frames(str(broken))

"""Untrusted media: a refused image format never reaches its external program (a stand-in
`gs` on PATH records any call), float images are scaled or refused, videos are opened with
allow-listed demuxers and decoders only, and a long video costs a few keyframe intervals
of decoding. References are data written by the tests (pixel values, frame contents)."""
from __future__ import annotations

import io
import logging
import os
import stat

import numpy as np
import pytest
import torch
from PIL import EpsImagePlugin, Image

from lavis_ib.common.errors import ConfigError, DataError
from lavis_ib.datasets.datasets.base import BadSample, load_image
from lavis_ib.processors import media_limits
from lavis_ib.processors.image import BlipImageEvalProcessor, decode_image
from lavis_ib.processors.media_limits import MediaLimits, set_media_limits
from lavis_ib.processors.video import read_video_frames, uniform_frame_indices

EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
       b"newpath 0 0 moveto 10 10 lineto stroke\nshowpage\n")
ALLOWED_IMAGES = "JPEG, PNG, WEBP, BMP, GIF, TIFF"


@pytest.fixture()
def limits(monkeypatch):
    """Media limits changed by the test and restored after it."""
    monkeypatch.setattr(media_limits, "_LIMITS", media_limits.media_limits())
    return set_media_limits


@pytest.fixture()
def stand_in_gs(tmp_path, monkeypatch):
    """A `gs` (and `gsx`, `gswin64c`) first on PATH that records its arguments into a file,
    with PIL's cached Ghostscript lookup cleared so it would be found; the record file's
    path is returned (it must never exist)."""
    record = tmp_path / "gs_calls.txt"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("gs", "gsx", "gswin64c", "gswin32c"):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "$0 $@" >> "{record}"\nexit 1\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)
    monkeypatch.setattr(EpsImagePlugin, "gs_windows_binary", None)
    return record


# -- images ---------------------------------------------------------------------------------
def test_eps_named_jpg_starts_no_process_in_decoder_dataset_and_predict(tmp_path, stand_in_gs, caplog):
    """D8 (predict) and B8 (a dataset's image): refused by format, one line, gs never runs."""
    from lavis_ib.predict.batches import load_media
    from lavis_ib.predict.inputs import PredictRecord
    from lavis_ib.testing.fixtures import write_fixtures
    from tests.datasets.conftest import build

    eps = tmp_path / "eps.jpg"
    eps.write_bytes(EPS)
    reason = (f"its format is EPS (detected from its first bytes), which lavis_ib does not open "
              f"(allowed: {ALLOWED_IMAGES}); convert it to PNG or JPEG")
    with pytest.raises(DataError) as err:
        decode_image(str(eps))
    assert str(err.value) == reason
    # predict: the record is skipped with one logged line
    with caplog.at_level(logging.WARNING, logger="lavis_ib.predict.batches"):
        tensors, skipped = load_media([PredictRecord(str(eps), "image", "What is it?")],
                                      BlipImageEvalProcessor(image_size=16))
    assert tensors == {} and skipped == {0: f"image '{eps}' is not a readable image: {reason}"}
    assert [r.getMessage() for r in caplog.records] == [f"skipped ({skipped[0]})"]
    # a dataset whose image file holds an EPS document: __getitem__ gives a BadSample
    overrides = write_fixtures(str(tmp_path / "data"), ["coco_caption"])["coco_caption"]
    train = build("coco_caption", overrides)["train"]
    victim = train.visual_path(train.annotation[0])
    with open(victim, "wb") as f:
        f.write(EPS)
    sample = train[0]
    assert isinstance(sample, BadSample) and sample.path == victim and sample.reason == reason
    assert not stand_in_gs.exists(), stand_in_gs.read_text()


def _save(image, fmt):
    buffer = io.BytesIO()
    extra = {"save_all": True, "append_images": [image.transpose(Image.FLIP_LEFT_RIGHT)]} \
        if fmt == "MPO" else {}
    image.save(buffer, format=fmt, **extra)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("fmt", ["JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF"])
def test_allowed_formats_open(fmt):
    image = Image.new("RGB", (6, 4), (200, 40, 40))
    rgb = np.asarray(decode_image(_save(image, fmt)), dtype=int)
    assert rgb.shape == (4, 6, 3) and np.abs(rgb - [200, 40, 40]).max() <= 4


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "PCX", "SGI", "QOI"])
def test_other_formats_are_refused_by_name(fmt):
    with pytest.raises(DataError) as err:
        decode_image(_save(Image.new("RGB", (6, 4)), fmt))
    assert str(err.value).startswith(f"its format is {fmt} (detected from its first bytes), ")


def test_float_tiff_in_0_1_is_scaled_by_255(tmp_path):
    """D7: a normalised float TIFF (0.8 everywhere) is grey 204, not black."""
    path = tmp_path / "normalised.tif"
    Image.fromarray(np.full((3, 5), 0.8, dtype=np.float32)).save(path, format="TIFF")
    rgb = np.asarray(load_image(str(path)))
    assert rgb.shape == (3, 5, 3) and (rgb == 204).all()


@pytest.mark.parametrize("low,high", [(0.0, 255.0), (-0.5, 0.5)], ids=["0-255", "negative"])
def test_float_tiff_outside_0_1_is_refused(tmp_path, low, high):
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([[low, high]], dtype=np.float32)).save(path, format="TIFF")
    bad = load_image(str(path))
    assert isinstance(bad, BadSample) and bad.reason == (
        f"the image has float pixel values from {low:g} to {high:g}; float images are read only "
        f"in [0, 1] (scaled by 255): save it as 8-bit or scale it to [0, 1]")


def test_pixel_limit_is_ours_and_pil_global_is_untouched(tmp_path, limits):
    path = tmp_path / "wide.png"
    Image.new("RGB", (20, 10)).save(path)
    before = Image.MAX_IMAGE_PIXELS
    limits(max_image_pixels=199)
    bad = load_image(str(path))
    assert isinstance(bad, BadSample) and bad.reason == (
        "too many pixels (a decompression bomb?): 20x10 is 200 pixels, over the limit of 199 "
        "(media limit max_image_pixels)")
    limits(max_image_pixels=200)
    assert load_image(str(path)).size == (20, 10)
    assert Image.MAX_IMAGE_PIXELS == before


def test_any_decoder_error_is_one_line(tmp_path, monkeypatch):
    """A decoder failing with something other than OSError (a plugin's struct.error,
    IndexError...) is still this file's fault: a BadSample, not a traceback."""
    import struct

    path = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(path)

    def broken_load(self):
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr(Image.Image, "load", broken_load)
    bad = load_image(str(path))
    assert isinstance(bad, BadSample) and bad.reason == "cannot be decoded: error: unpack requires a buffer of 4 bytes"


def test_limits_are_checked():
    with pytest.raises(ConfigError, match="may not name \\['EPS'\\]"):
        MediaLimits(image_formats=("JPEG", "eps"))
    with pytest.raises(ConfigError, match="max_video_seconds must be a finite number > 0"):
        MediaLimits(max_video_seconds=float("inf"))
    with pytest.raises(ConfigError, match="max_decoded_frames must be a whole number >= 1"):
        MediaLimits(max_decoded_frames=0)
    with pytest.raises(ConfigError, match="unknown media limit"):
        set_media_limits(max_pixels=3)


# -- videos ---------------------------------------------------------------------------------
def _write_video(path, levels, codec="mpeg4", rate=30, gop=30, size=16, fmt=None):
    """A video whose frame i is grey `levels[i]` (small frames, keyframe every `gop`)."""
    import av

    grey = {v: av.VideoFrame.from_ndarray(np.full((size, size, 3), v, np.uint8), format="rgb24")
            for v in set(levels)}
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p" if codec != "png" else "rgb24"
        stream.codec_context.gop_size = gop
        for v in levels:
            for packet in stream.encode(grey[v]):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def test_long_video_without_frame_count_is_read_by_seeking(tmp_path):
    """E11: 1,000 s of 30 fps (30,000 frames) in Matroska, whose header has no frame count:
    the 4 sampled frames are the right ones and fewer than 200 frames are decoded (a
    keyframe every 30 frames), where a full decode would be 30,000."""
    import av

    n = 30_000
    levels = [10 * (i * 25 // n) for i in range(n)]      # 25 grey steps of 1,200 frames
    path = _write_video(tmp_path / "long.mkv", levels)
    with av.open(path) as container:
        assert container.streams.video[0].frames == 0
    stats = {}
    frames = read_video_frames(path, 4, stats=stats)
    wanted = uniform_frame_indices(n, 4)
    assert wanted == [3750, 11250, 18750, 26250]
    means = frames.float().mean(dim=(1, 2, 3))
    assert torch.allclose(means, torch.tensor([float(levels[i]) for i in wanted]), atol=2), means
    assert stats["seeks"] == 4 and stats["decoded"] < 200, stats


@pytest.mark.parametrize("fmt,ext,codec", [("matroska", "mkv", "mpeg4"), ("mp4", "mp4", "libx264"),
                                           ("avi", "avi", "mpeg4")])
def test_seeking_picks_the_frame_a_full_decode_counts(tmp_path, fmt, ext, codec):
    """Every frame distinct, keyframe every 5, B-frames for H.264: frame i of a full decode
    (the reference: PyAV decoding the whole stream) is what index i returns."""
    import av

    levels = [(37 * i) % 250 for i in range(241)]
    path = _write_video(tmp_path / f"clip.{ext}", levels, codec=codec, rate=6, gop=5, fmt=fmt)
    with av.open(path) as container:
        every = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    for n_frames in (4, 7):
        wanted = uniform_frame_indices(len(every), n_frames)
        stats = {}
        frames = read_video_frames(path, n_frames, stats=stats)
        expected = torch.from_numpy(np.stack([every[i] for i in wanted])).permute(0, 3, 1, 2)
        assert torch.equal(frames, expected), (n_frames, stats)
        assert stats["seeks"] >= 1


PLAYLIST = "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:2,\n{target}\n#EXT-X-ENDLIST\n"


@pytest.mark.parametrize("kind,name", [("hls", "x.m3u8"), ("concat", "x.mp4"), ("wav", "x.mp4")])
def test_playlists_concat_lists_and_other_formats_are_refused_by_format(tmp_path, kind, name):
    import wave

    real = _write_video(tmp_path / "real.mp4", [0, 100, 200], rate=6)
    path = tmp_path / name
    if kind == "wav":
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000), w.writeframes(b"\0\0" * 800)
    else:
        path.write_text(PLAYLIST.format(target=f"file://{real}") if kind == "hls"
                        else f"ffconcat version 1.0\nfile {real}\n")
    with pytest.raises(DataError) as err:
        read_video_frames(str(path))
    assert str(err.value) == (f"video '{path}' cannot be decoded: its container format is {kind}, which "
                              f"lavis_ib does not open (allowed: mov, mp4, matroska, webm, avi, "
                              f"mpegts); re-encode it as MP4 or MKV.")


def test_a_container_never_opens_another_file(tmp_path, limits):
    """Even with the playlist demuxer allowed, the file the playlist names is not opened."""
    real = _write_video(tmp_path / "real.mp4", [0, 100, 200], rate=6)
    path = tmp_path / "x.m3u8"
    path.write_text(PLAYLIST.format(target=f"file://{real}"))
    limits(video_formats=("hls", "mov"))
    with pytest.raises(DataError) as err:
        read_video_frames(str(path))
    assert str(err.value) == (f"video '{path}' cannot be decoded: the video asks to open another "
                              f"file or URL ('file://{real}'); refused")


def test_codec_pixel_duration_frame_and_decoding_limits(tmp_path, limits):
    png = _write_video(tmp_path / "png.mov", [0, 50, 100], codec="png", rate=6)
    with pytest.raises(DataError, match=r"is refused: its codec is png \(allowed: h264, "):
        read_video_frames(png)
    clip = _write_video(tmp_path / "clip.mp4", [0, 50, 100, 150, 200, 250] * 10, rate=6, gop=60)
    cases = [({"max_video_pixels": 255}, "its frames are 16x16, over 255 pixels (media limit max_video_pixels)."),
             ({"max_video_seconds": 9.5}, "it lasts 10 s, over 9.5 s (media limit max_video_seconds)."),
             ({"max_video_frames": 59}, "it has 60 frames, over 59 (media limit max_video_frames)."),
             ({"video_codecs": ("h264",)}, "its codec is mpeg4 (allowed: h264); re-encode it, e.g. as H.264.")]
    for change, reason in cases:
        limits(**change)
        with pytest.raises(DataError) as err:
            read_video_frames(clip)
        assert str(err.value) == f"video '{clip}' is refused: {reason}"
        limits(**{k: getattr(MediaLimits(), k) for k in change})
    limits(max_decoded_frames=40)   # one keyframe: the last sampled frame (52) needs 53
    with pytest.raises(DataError) as err:
        read_video_frames(clip)
    assert str(err.value).startswith(f"video '{clip}' needs more than 40 decoded frames to reach "
                                     f"its sampled frames (keyframes far apart?)")
    limits(max_decoded_frames=60)
    stats = {}
    read_video_frames(clip, stats=stats)
    assert stats["decoded"] <= 60, stats


def test_a_video_dataset_gets_a_bad_sample_for_a_refused_file(tmp_path):
    from lavis_ib.testing.fixtures import write_fixtures
    from tests.datasets.conftest import build

    overrides = write_fixtures(str(tmp_path / "data"), ["msrvtt_qa"])["msrvtt_qa"]
    test = build("msrvtt_qa", overrides)["test"]
    victim = test.visual_path(test.annotation[0])
    with open(victim, "w") as f:
        f.write("ffconcat version 1.0\nfile /etc/hostname\n")
    sample = test[0]
    assert isinstance(sample, BadSample) and sample.path == victim
    assert sample.reason.startswith(f"video '{victim}' cannot be decoded: its container format is concat, ")

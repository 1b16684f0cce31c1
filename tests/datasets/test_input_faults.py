"""Fault matrix of the inputs issue, data rows: each hostile or malformed input and the
behaviour required (a BadSample with a reason, one clear error line, a log line and a
count). References are written as data here (pixel values, exact messages)."""
from __future__ import annotations

import io
import json
import logging
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from lavis_ib.common.errors import ConfigError, DataError, LavisIbError
from lavis_ib.datasets.datasets.base import BadSample, collate, load_image
from lavis_ib.testing.fixtures import write_fixtures
from lavis_ib.datasets.loaders import MixtureLoader
from tests.datasets.conftest import build

OUTSIDE = "outside the dataset's media folder (vis_root); set allow_outside_root: true on the dataset to allow it"


@pytest.fixture()
def caption_set(tmp_path):
    """A coco_caption fixture copy whose records the rows rewrite, and a file outside it."""
    overrides = write_fixtures(str(tmp_path / "data"), ["coco_caption"])["coco_caption"]
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(secret)
    return overrides, tmp_path


def _with_records(overrides, records, **extra):
    """The caption train split over `records` (LAVIS caption format)."""
    path = overrides["build_info"]["annotations"]["train"]["storage"]
    with open(path, "w") as f:
        json.dump(records, f)
    return build("coco_caption", {**overrides, **extra})["train"]


def _an_image(overrides):
    folder = overrides["build_info"]["images"]["storage"]
    return next(os.path.join(root, f) for root, _, files in os.walk(folder) for f in files)


# -- 3. media paths stay inside vis_root --------------------------------------------------
def _outside_paths(overrides, tmp_path):
    folder = overrides["build_info"]["images"]["storage"]
    link = os.path.join(folder, "link.png")
    os.symlink(tmp_path / "secret.png", link)
    return {"dotdot existing": os.path.relpath(tmp_path / "secret.png", folder),
            "dotdot missing": os.path.relpath(tmp_path / "nothing.png", folder),
            "absolute existing": str(tmp_path / "secret.png"),
            "absolute missing": str(tmp_path / "nothing.png"),
            "symlink out": "link.png"}


def test_paths_outside_vis_root_are_bad_samples_that_do_not_tell_existence(caption_set):
    overrides, tmp_path = caption_set
    paths = _outside_paths(overrides, tmp_path)
    train = _with_records(overrides, [{"image": p, "caption": "a cat"} for p in paths.values()])
    for i, (row, path) in enumerate(paths.items()):
        sample = train[i]
        assert sample == BadSample(path, OUTSIDE), row   # the same reason, file or no file


def test_allow_outside_root_reads_them(caption_set):
    overrides, tmp_path = caption_set
    train = _with_records(overrides, [{"image": str(tmp_path / "secret.png"), "caption": "a cat"}],
                          allow_outside_root=True)
    assert train[0]["image"].shape == (3, 32, 32)


@pytest.mark.parametrize("allow", [False, True], ids=["refused", "allowed"])
def test_webdataset_pipe_urls_need_allow_pipe(allow):
    cfg = {"build_info": {"annotations": {"train": {"storage": "pipe:curl -s https://x/{0..1}.tar"}}},
           "allow_pipe": allow}
    if not allow:
        with pytest.raises(ConfigError, match="runs a shell command; set allow_pipe: true"):
            build("capfilt14m", cfg)
    else:
        assert build("capfilt14m", cfg)["train"].shards == [
            "pipe:curl -s https://x/0.tar", "pipe:curl -s https://x/1.tar"]


# -- 4. silent wrong inputs ---------------------------------------------------------------
def test_16_bit_png_is_scaled_to_8_bits(tmp_path):
    eight = np.array([[0, 1, 127], [128, 254, 255]], dtype=np.uint8)
    path = tmp_path / "grey16.png"
    Image.fromarray(eight.astype(np.uint16) * 257).save(path)   # 8-bit v is 16-bit v*257
    assert Image.open(path).mode == "I;16"
    rgb = np.asarray(load_image(str(path)))
    assert rgb.shape == (2, 3, 3) and (rgb == eight[..., None]).all()


def _nan_tiff(path):
    values = np.full((6, 6), 0.5, dtype=np.float32)
    values[2, 3] = np.nan
    Image.fromarray(values).save(path, format="TIFF")


def _bomb(path):
    Image.new("RGB", (40, 40)).save(path)   # 1600 pixels, over 2 x the patched limit


FAULTY_IMAGES = [("nan pixels", _nan_tiff, "the image has NaN or infinite pixel values"),
                 ("decompression bomb", _bomb, "too many pixels (a decompression bomb?)")]


@pytest.mark.parametrize("write,reason", [r[1:] for r in FAULTY_IMAGES], ids=[r[0] for r in FAULTY_IMAGES])
def test_faulty_images_are_bad_samples_in_loaders_and_one_line_for_prediction(tmp_path, monkeypatch, write, reason):
    from lavis_ib.processors.media_files import load_images
    from lavis_ib.processors.image import BlipImageEvalProcessor

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    path = str(tmp_path / "faulty.tif")
    write(path)
    bad = load_image(path)
    assert isinstance(bad, BadSample) and bad.path == path and bad.reason.startswith(reason)
    with pytest.raises(DataError) as err:
        load_images([path], BlipImageEvalProcessor(image_size=16))
    assert str(err.value).startswith(f"image '{path}' is not a readable image: {reason}")
    assert "\n" not in str(err.value)


def test_a_non_finite_tensor_is_refused_by_the_processor():
    from lavis_ib.processors.image import BlipImageEvalProcessor

    image = torch.full((3, 8, 8), float("nan"))
    with pytest.raises(DataError, match="NaN or infinite"):
        BlipImageEvalProcessor(image_size=8)(image)


CAPTIONS = [("null", None, "null"), ("number", 3, "int 3"), ("list with a number", ["a", 7], "list ['a', 7]")]


@pytest.mark.parametrize("value,shown", [r[1:] for r in CAPTIONS], ids=[r[0] for r in CAPTIONS])
def test_caption_of_the_wrong_type_names_file_record_and_field(caption_set, value, shown):
    overrides, _ = caption_set
    path = overrides["build_info"]["annotations"]["train"]["storage"]
    with pytest.raises(DataError) as err:
        _with_records(overrides, [{"image": "a.jpg", "caption": "fine"}, {"image": "b.jpg", "caption": value}])
    assert str(err.value) == (f"'{path}' record 1: field 'caption' must be a string or a list of strings; "
                              f"got {shown}. Fix the record or drop the field for an unlabelled sample.")


class _Files(torch.utils.data.Dataset):
    """Sample i: a tensor, or a BadSample for the indices in `bad`."""

    def __init__(self, n, bad):
        self.n, self.bad = n, set(bad)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        i %= self.n
        return BadSample(f"img{i}.jpg", "cannot be decoded: broken") if i in self.bad else {"x": torch.tensor([i])}


def test_a_step_where_every_sample_failed_is_an_error_not_a_zero_loss():
    loader = MixtureLoader({"d": _Files(4, bad=range(4))}, None, 4, 2, 0, 1, seed=0,
                           max_bad_sample_fraction=1.0)
    with pytest.raises(DataError, match=r"every one of the 4 samples of step 1 on rank 0 \(d\) was unreadable"):
        loader.next_step()


# -- 5. every skipped file is logged once and counted ---------------------------------------
def test_each_bad_file_is_logged_once_with_its_reason_and_counted(caplog):
    loader = MixtureLoader({"d": _Files(8, bad=[3])}, None, 8, 4, 0, 1, seed=0, max_bad_sample_fraction=0.5)
    with caplog.at_level(logging.WARNING, logger="lavis_ib.datasets.bad_samples"):
        for _ in range(3):   # img3.jpg is met once per step
            loader.next_step()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["skipped unreadable training sample img3.jpg: cannot be decoded: broken (1 bad so far)"]
    assert loader.num_bad == 3 and loader.num_requested == 24
    assert loader.pop_bad_events() == [{"event": "bad_sample", "path": "img3.jpg", "reason":
                                        "cannot be decoded: broken", "step": 1, "dataset": "d", "num_bad": 1}]
    assert loader.pop_bad_events() == []


@pytest.mark.parametrize("grace,raises", [(0, True), (1000, False)], ids=["strict", "grace 1000"])
def test_bad_sample_grace_is_the_minimum_count_before_the_fraction_applies(grace, raises):
    loader = MixtureLoader({"d": _Files(8, bad=[3])}, None, 8, 4, 0, 1, seed=0,
                           max_bad_sample_fraction=0.01, bad_sample_grace=grace)
    if raises:   # 1 bad of 8 > 1%
        with pytest.raises(DataError, match="run.bad_sample_grace = 0"):
            loader.next_step()
    else:        # 1 bad <= 1% of 1000
        loader.next_step()


def test_collate_keeps_the_reasons():
    batch = collate([BadSample("a.jpg", "missing"), {"x": torch.zeros(1)}])
    assert batch["_bad_files"] == ["a.jpg"] and batch["_bad_reasons"] == ["missing"]


# -- 6. tracebacks become lines -------------------------------------------------------------
class _Evil:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_hostile_bin_is_one_line(tmp_path):
    from lavis_ib.models.weights.files import iter_shards

    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Evil()}, protocol=2))
    with pytest.raises(LavisIbError) as err:
        next(iter_shards(str(tmp_path)))
    assert str(err.value) == (f"'{tmp_path / 'pytorch_model.bin'}' is not a plain weights file that "
                              f"torch.load(weights_only=True) accepts (it holds objects other than tensors); "
                              f"use the checkpoint's safetensors or re-save it from a trusted source.")


def test_audio_only_video_is_one_clear_line(tmp_path):
    from lavis_ib.processors.video import read_video_frames

    import av

    path = str(tmp_path / "sound.mkv")   # an allowed container (a .wav is refused by format)
    with av.open(path, "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(DataError) as err:
        read_video_frames(path)
    assert str(err.value) == (f"video '{path}' has no video stream (audio only?); remove it from the "
                              f"dataset or re-encode it with its frames.")


def test_shard_level_webdataset_error_is_a_counted_bad_sample(tmp_path, caplog):
    import webdataset as wds

    from lavis_ib.datasets.datasets.webdataset_caption import WebCaptionDataset

    with wds.TarWriter(str(tmp_path / "s-0.tar")) as sink:
        sink.write({"__key__": "k", "jpg": open(_jpeg(tmp_path), "rb").read(), "txt": "a cap"})
    missing = str(tmp_path / "s-1.tar")   # listed, never written: the shard cannot be opened
    ds = WebCaptionDataset(ann_paths=[str(tmp_path / "s-{0..1}.tar")], num_samples=1, rank=0, world_size=1)
    items = list(ds)
    bad = [s for s in items if isinstance(s, BadSample)]
    assert len(items) == 2 and len(bad) == 1 and missing in bad[0].path
    assert bad[0].reason == "shard error: FileNotFoundError: 2 No such file or directory"
    loader = MixtureLoader({"web": ds}, None, 2, 2, 0, 1, seed=0, max_bad_sample_fraction=1.0, sizes={"web": 1})
    with caplog.at_level(logging.WARNING, logger="lavis_ib.datasets.bad_samples"):
        loader.next_step()
    assert loader.num_bad == 1 and any(missing in r.getMessage() for r in caplog.records)


def _jpeg(tmp_path):
    path = tmp_path / "x.jpg"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path)
    return path

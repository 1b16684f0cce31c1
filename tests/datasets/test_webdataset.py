"""Web CapFilt streaming: rank x worker splitting and bad samples."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from lavis_ib.datasets.datasets.base import BadSample
from lavis_ib.datasets.datasets.webdataset_caption import WebCaptionDataset
from lavis_ib.processors.image import BlipImageEvalProcessor
from lavis_ib.processors.templates import InstructionTemplateProcessor


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    import webdataset as wds

    root = tmp_path_factory.mktemp("wds")
    for s in range(6):
        with wds.TarWriter(str(root / f"part-{s:02d}.tar")) as sink:
            for i in range(5):
                sink.write({"__key__": f"{s:02d}{i:02d}", "jpg": jpeg(10 * s + i), "txt": f"caption {s} {i}"})
    return str(root / "part-{00..05}.tar")


def identity(sample):
    return sample


def make(pattern, rank, world, **kw):
    return WebCaptionDataset(vis_processor=BlipImageEvalProcessor(image_size=16),
                             text_processor=InstructionTemplateProcessor("caption"),
                             ann_paths=[pattern], num_samples=30, rank=rank, world_size=world, **kw)




@pytest.mark.timeout(120)
@pytest.mark.parametrize("shuffle", [{}, {"shuffle_shards": True, "shuffle_buffer": 4}], ids=["ordered", "shuffled"])
def test_two_ranks_two_workers_see_each_sample_exactly_once_per_pass(shards, shuffle):
    seen = []
    for rank in range(2):
        ds = make(shards, rank, 2, **shuffle)
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, collate_fn=identity)
        rank_items = [s["text_output"] for s in loader]
        seen += rank_items
        assert 10 <= len(rank_items) <= 20   # 3 shards of 5 samples per rank
    assert sorted(seen) == sorted(f"caption {s} {i}" for s in range(6) for i in range(5))
    assert len(seen) == len(set(seen)) == 30


def test_a_second_pass_repeats_the_samples_with_a_new_template_epoch(shards):
    ds = make(shards, 0, 1)
    first = [(s["text_output"], s["text_input"]) for s in ds]
    ds.set_epoch(1)
    second = [(s["text_output"], s["text_input"]) for s in ds]
    assert [a for a, _ in first] == [a for a, _ in second] and len(first) == 30
    assert [b for _, b in first] != [b for _, b in second]
    assert len(ds) == 30


def test_bad_samples_are_skipped_counted_and_listed(tmp_path):
    import webdataset as wds

    with wds.TarWriter(str(tmp_path / "bad-0.tar")) as sink:
        sink.write({"__key__": "good", "jpg": jpeg(1), "txt": "a good one"})
        sink.write({"__key__": "corrupt", "jpg": b"not a jpeg at all", "txt": "broken image"})
        sink.write({"__key__": "nocap", "jpg": jpeg(2), "cls": b"3"})
        sink.write({"__key__": "noimage", "txt": "caption without image"})
        sink.write({"__key__": "good2", "png": jpeg(3), "json": b'{"caption": "second good"}'})
    ds = make(str(tmp_path / "bad-0.tar"), 0, 1)
    items = list(ds)
    assert ds.num_bad == 3
    batch = ds.collater(items)
    assert batch["text_output"] == ["a good one", "second good"]
    assert len(batch["_bad_files"]) == 3 and batch["_num_requested"] == 5
    assert any(p.endswith("#corrupt") for p in batch["_bad_files"])
    reasons = {b.reason.split(":")[0] for b in items if isinstance(b, BadSample)}
    assert reasons == {"image cannot be decoded", "no readable caption", "no image member"}


def test_a_truncated_shard_is_skipped_and_the_stream_goes_on(tmp_path, shards):
    import webdataset as wds

    with wds.TarWriter(str(tmp_path / "t-0.tar")) as sink:
        for i in range(20):
            sink.write({"__key__": f"k{i:03d}", "jpg": jpeg(i), "txt": f"cap {i}"})
    data = open(tmp_path / "t-0.tar", "rb").read()
    (tmp_path / "t-0.tar").write_bytes(data[: len(data) // 2 + 77])
    with wds.TarWriter(str(tmp_path / "t-1.tar")) as sink:
        sink.write({"__key__": "after", "jpg": jpeg(99), "txt": "after the broken shard"})
    ds = make(str(tmp_path / "t-{0..1}.tar"), 0, 1)
    outputs = [s["text_output"] for s in ds if not isinstance(s, BadSample)]
    assert outputs[-1] == "after the broken shard" and 0 < len(outputs) < 21
    assert ds.num_bad >= 1


def test_builder_reports_a_missing_shard(tmp_path):
    from lavis_ib.common.errors import DataError
    from tests.datasets.conftest import build

    with pytest.raises(DataError, match=r"shard .*part-000\.tar"):
        build("capfilt14m", {"build_info": {"annotations": {"train": {"storage": str(tmp_path / "part-{000..003}.tar")}}}})


def test_seeded_shuffling_is_reproducible_and_changes_with_the_epoch(shards):
    order = lambda ds: [s["text_output"] for s in ds]
    a, b = make(shards, 0, 1, shuffle_shards=True, shuffle_buffer=8), make(shards, 0, 1, shuffle_shards=True,
                                                                          shuffle_buffer=8)
    first = order(a)
    assert first == order(b) and sorted(first) == sorted(order(make(shards, 0, 1)))
    assert first != order(make(shards, 0, 1))   # shuffled differs from stream order
    a.set_epoch(1)
    assert order(a) != first and sorted(order(a)) == sorted(first)


def test_template_draw_does_not_depend_on_where_the_shards_are(shards, tmp_path):
    import glob
    import shutil

    for path in glob.glob(shards.replace("{00..05}", "*")):
        shutil.copy(path, tmp_path)
    moved = str(tmp_path / os.path.basename(shards))
    pairs = lambda pattern: [(s["text_output"], s["text_input"]) for s in make(pattern, 0, 1)]
    assert pairs(shards) == pairs(moved)
    assert len({t for _, t in pairs(shards)}) > 3   # several templates drawn


def test_fewer_shards_than_ranks_is_an_error(shards):
    from lavis_ib.common.errors import DataError

    with pytest.raises(DataError, match="6 shard"):
        list(make(shards, 7, 8))

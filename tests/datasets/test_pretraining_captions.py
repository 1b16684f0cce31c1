"""Caption datasets for pretraining: several captions per image, one drawn per sample and
epoch from the sample's own generator (so a resumed run draws the same), `image_id` keys
shared by an image's captions and distinct across datasets; Visual Genome's file as
released (absolute paths of the authors' machine); webdataset samples with caption lists."""
import io
import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from lavis_ib.common.errors import ConfigError, DataError
from lavis_ib.datasets.datasets.base import sample_rng
from lavis_ib.datasets.datasets.webdataset_caption import WebCaptionDataset
from lavis_ib.datasets.mixing import merge_batches
from lavis_ib.processors.image import BlipImageEvalProcessor
from lavis_ib.processors.templates import InstructionTemplateProcessor
from lavis_ib.processors.text import normalize_caption
from tests.datasets.conftest import build


@pytest.fixture(scope="module")
def fixtures(fixture_root):
    return fixture_root.overrides


def captions_by_image(path):
    by_image = {}
    with open(path) as f:
        for row in json.load(f):
            by_image.setdefault(row["image_id"], []).append(normalize_caption(row["caption"]))
    return by_image


def test_vg_caption_reads_the_released_file_one_sample_per_caption(fixtures):
    train = build("vg_caption", fixtures["vg_caption"])["train"]
    rows = json.load(open(fixtures["vg_caption"]["build_info"]["annotations"]["train"]["storage"]))
    assert rows[0]["image"].startswith("/export/share/datasets/vision/visual-genome/image/")
    assert len(train) == len(rows) == 8
    samples = [train[i] for i in range(len(train))]
    assert [s["text_output"] for s in samples] == [normalize_caption(r["caption"]) for r in rows]
    assert set(samples[0]) == {"image", "text_input", "text_output"}   # image_ids off by default


def test_per_image_draw_is_fixed_by_sample_and_epoch(fixtures):
    path = fixtures["vg_caption"]["build_info"]["annotations"]["train"]["storage"]
    overrides = {**fixtures["vg_caption"], "sample_unit": "image", "image_ids": True}
    first, second = (build("vg_caption", overrides)["train"] for _ in range(2))
    options = list(captions_by_image(path).values())
    assert len(first) == 3
    requests = [i for i in range(12 * len(first))]   # 12 epochs
    drawn = [first[i]["text_output"] for i in requests]
    # a fresh dataset, asked in another order, draws the same (what an exact resume needs)
    assert [second[i]["text_output"] for i in reversed(requests)] == list(reversed(drawn))
    for i, caption in zip(requests, drawn):
        epoch, index = divmod(i, len(first))
        assert caption in options[index]
        pick = int(sample_rng(first.seed, epoch, index, 2).integers(len(options[index])))
        assert caption == options[index][pick]
    # the image with 4 captions gets several of them over the epochs
    assert len(set(drawn[2::3])) > 1


def test_image_ids_are_shared_by_an_image_and_distinct_across_datasets(fixtures):
    vg = build("vg_caption", {**fixtures["vg_caption"], "image_ids": True})["train"]
    coco = build("coco_caption", {**fixtures["coco_caption"], "image_ids": True})["train"]
    rows = json.load(open(fixtures["vg_caption"]["build_info"]["annotations"]["train"]["storage"]))
    keys = [int(vg[i]["image_id"]) for i in range(len(vg))]
    assert [keys.index(k) for k in keys] == [[r["image_id"] for r in rows].index(r["image_id"]) for r in rows]
    coco_keys = {int(coco[i]["image_id"]) for i in range(len(coco))}
    assert len(coco_keys) == 3 and not coco_keys & set(keys)
    batch = merge_batches([vg.collater([vg[0], vg[3]]), coco.collater([coco[0], coco[1]])], [2, 2])
    assert batch["image_id"].dtype == torch.long and batch["image_id"].shape == (4,)
    # coco's two first rows are captions of one image
    assert batch["image_id"][2] == batch["image_id"][3]


def test_caption_datasets_are_unchanged_by_default(fixtures):
    coco = build("coco_caption", fixtures["coco_caption"])["train"]
    assert len(coco) == 6 and set(coco[0]) == {"image", "text_input", "text_output"}


def test_bad_settings_and_paths(fixtures, tmp_path):
    with pytest.raises(ConfigError, match="sample_unit 'images'"):
        build("vg_caption", {**fixtures["vg_caption"], "sample_unit": "images"})
    with pytest.raises(DataError, match="absolute after cutting strip_image_prefix"):
        build("vg_caption", {**fixtures["vg_caption"], "strip_image_prefix": "/export/other/"})


def _jpeg(seed):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_webdataset_samples_with_several_captions_draw_one_per_pass(tmp_path):
    import webdataset as wds

    captions = [f"caption {k} of the image" for k in range(4)]
    with wds.TarWriter(str(tmp_path / "shard-0.tar")) as sink:
        for i in range(3):
            sink.write({"__key__": f"s{i}", "jpg": _jpeg(i), "json": json.dumps({"caption": captions}).encode()})

    def make():
        return WebCaptionDataset(vis_processor=BlipImageEvalProcessor(image_size=16),
                                 text_processor=InstructionTemplateProcessor("caption"),
                                 ann_paths=[str(tmp_path / "shard-0.tar")], num_samples=3, rank=0,
                                 world_size=1, image_ids=True)

    passes = []
    for epoch in range(8):
        ds = make()
        ds.set_epoch(epoch)
        passes.append([(s["text_output"], int(s["image_id"])) for s in ds])
    again = make()
    again.set_epoch(5)
    assert [(s["text_output"], int(s["image_id"])) for s in again] == passes[5]
    assert all(c in {normalize_caption(x) for x in captions} for p in passes for c, _ in p)
    assert len(Counter(p[0][0] for p in passes)) > 1           # a sample's caption changes per pass
    assert len({k for p in passes for _, k in p}) == 3         # one key per sample, every pass

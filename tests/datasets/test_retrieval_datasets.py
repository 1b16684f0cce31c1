"""coco_retrieval and flickr30k_retrieval build from their fixtures: training samples per
caption with an image key shared by the image's captions, evaluation galleries that
follow the annotation files (several captions per image, 6 for one COCO image)."""
import json

import pytest
import torch

from lavis_ib.common.errors import DataError
from lavis_ib.datasets.datasets.retrieval import RetrievalEvalDataset
from lavis_ib.processors.text import BlipCaptionProcessor
from tests.datasets.conftest import SMALL, build

NAMES = ("coco_retrieval", "flickr30k_retrieval")


@pytest.fixture(scope="module")
def fixtures(fixture_root):
    return fixture_root.overrides


def read(path):
    with open(path) as f:
        return json.load(f)


@pytest.mark.parametrize("name", NAMES)
def test_training_split_one_sample_per_caption_with_a_shared_image_key(fixtures, name):
    train = build(name, fixtures[name])["train"]
    rows = read(fixtures[name]["build_info"]["annotations"]["train"]["storage"])
    assert len(train) == len(rows)
    samples = [train[i] for i in range(len(train))]
    assert all(set(s) == {"image", "text_input", "image_id", "instance_id"} for s in samples)
    assert all(s["image"].shape == (3, SMALL, SMALL) for s in samples)
    assert [s["text_input"] for s in samples] == [BlipCaptionProcessor()(r["caption"]) for r in rows]
    keys = [int(s["image_id"]) for s in samples]
    for a, ra in zip(keys, rows):   # equal keys exactly for captions of one image
        assert [b == a for b in keys] == [rb["image_id"] == ra["image_id"] for rb in rows]
    batch = train.collater(samples[:4])
    assert batch["image_id"].dtype == torch.long and batch["image_id"].shape == (4,)
    assert train[len(train)]["text_input"] == samples[0]["text_input"]   # epoch-encoded index


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("which", ["val", "test"])
def test_evaluation_split_is_a_gallery_of_images_and_their_captions(fixtures, name, which):
    ds = build(name, fixtures[name])[which]
    rows = read(fixtures[name]["build_info"]["annotations"][which]["storage"])
    assert ds.image == [r["image"] for r in rows]
    assert [[ds.text[t] for t in caps] for caps in ds.img2txt] == \
        [[BlipCaptionProcessor()(c) for c in r["caption"]] for r in rows]
    assert ds.txt2img == [i for i, r in enumerate(rows) for _ in r["caption"]]
    assert len(ds.text) == sum(len(r["caption"]) for r in rows)
    sample = ds[1]
    assert set(sample) == {"image", "index", "image_id", "instance_id"} and sample["index"] == 1
    assert len({ds[i]["instance_id"] for i in range(len(ds))}) == len(ds)


def test_coco_test_gallery_has_an_image_with_six_captions(fixtures):
    ds = build("coco_retrieval", fixtures["coco_retrieval"])["test"]
    assert [len(c) for c in ds.img2txt] == [5, 6, 5, 5]
    assert ds[1]["image_id"] == 171   # from COCO_val2014_000000000171.jpg, as LAVIS derives it


def test_an_image_without_captions_is_refused(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps([{"image": "a.jpg", "caption": ["a dog"]}, {"image": "b.jpg", "caption": []}]))
    with pytest.raises(DataError, match="b.jpg.*no caption"):
        RetrievalEvalDataset(text_processor=BlipCaptionProcessor(), vis_root=str(tmp_path), ann_paths=[str(path)])

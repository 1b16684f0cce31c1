"""The `retrieval` task through the evaluation loop with a fake stage-1 model: its metrics
and records equal LAVIS's evaluation of the same model (tests/tasks/retrieval_reference.py),
the top-k re-ranking scores k pairs per query, and its settings are checked."""
import json
import os

import pytest
import torch

from lavis_ib import registry
from lavis_ib.common.config import compose_dataset
from lavis_ib.common.errors import ConfigError, DataError
from lavis_ib.runners.eval_loop import evaluate_split
from tests.datasets.conftest import build
from tests.tasks.retrieval_reference import FakeRetrievalModel, lavis_report, lavis_score_matrices


@pytest.fixture(scope="module")
def fixtures(fixture_root):
    return fixture_root.overrides


def split(fixtures, name="coco_retrieval", which="test"):
    return build(name, fixtures[name])[which]


def task_for(name="coco_retrieval", **entry):
    return registry.get_task_class("retrieval").for_dataset(
        name, compose_dataset(name, {"feature_workers": 0, **entry}))


def run(task, dataset, out_dir=None, model=None, batch_size=2, **limits):
    model = model or FakeRetrievalModel()
    metrics = evaluate_split(model, task, dataset, task.dataset_name, "test", batch_size=batch_size,
                             num_workers=0, device=torch.device("cpu"), out_dir=out_dir, **limits)
    return metrics, model


def reference(dataset, k, keep=None):
    """LAVIS's evaluation of the fake model over the images `keep` (default: all)."""
    keep = list(range(len(dataset))) if keep is None else keep
    images = torch.stack([dataset[i]["image"] for i in keep])
    texts = [t for i in keep for t in dataset.img2txt[i]]
    img2txt, start = [], 0
    for i in keep:
        img2txt.append(list(range(start, start + len(dataset.img2txt[i]))))
        start += len(dataset.img2txt[i])
    txt2img = [j for j, caps in enumerate(img2txt) for _ in caps]
    i2t, t2i = lavis_score_matrices(FakeRetrievalModel(), images, [dataset.text[t] for t in texts], k)
    return lavis_report(i2t, t2i, txt2img, img2txt)


@pytest.mark.parametrize("name", ["coco_retrieval", "flickr30k_retrieval"])
@pytest.mark.parametrize("k", [2, 3, 128])
def test_metrics_and_ranks_equal_lavis_evaluation(fixtures, tmp_path, name, k):
    dataset = split(fixtures, name)
    task = task_for(name, k_test=k)
    metrics, model = run(task, dataset, out_dir=str(tmp_path))
    expected, txt_ranks, img_ranks = reference(dataset, k)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key
    n, m = len(dataset), len(dataset.text)
    assert metrics["num_images"] == metrics["num_samples"] == n and metrics["num_texts"] == m
    # every query re-ranks min(k, gallery) pairs, each in one ITM call
    assert model.itm_pairs == n * min(k, m) + m * min(k, n)
    assert set(model.max_lengths) == {35}
    with open(os.path.join(tmp_path, "predictions.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["index"] for r in records] == list(range(n))
    assert [r["txt_rank"] - 1 for r in records] == txt_ranks
    assert [x - 1 for r in records for x in r["img_ranks"]] == img_ranks
    assert all(len(r["top_texts"]) == 5 and set(r["top_texts"]) <= set(dataset.text) for r in records)


def test_pairs_outside_the_top_k_score_minus_100(fixtures):
    """k=1 keeps one candidate per query: every other ground truth ranks at 1 or later, and
    the ranks differ from re-ranking every pair (so the -100 fill is what decides them)."""
    dataset = split(fixtures)
    few, _ = run(task_for(k_test=1), dataset)
    every, _ = run(task_for(k_test=128), dataset)
    expected, txt_ranks, img_ranks = reference(dataset, 1)
    assert few["txt_r1"] == pytest.approx(expected["txt_r1"])
    assert few["img_r1"] == pytest.approx(expected["img_r1"])
    assert (few["txt_r5"], few["img_r1"]) != (every["txt_r5"], every["img_r1"])


def test_unreadable_image_and_its_captions_are_left_out(tmp_path):
    from lavis_ib.testing.fixtures import write_fixtures

    # its own copy: the image is removed (the session's fixture root stays untouched)
    dataset = split(write_fixtures(str(tmp_path), ["coco_retrieval"]))
    os.remove(os.path.join(dataset.vis_root, dataset.image[1]))
    with pytest.raises(DataError, match="max_bad_sample_fraction"):   # the default limit, 0.01
        run(task_for(k_test=3), dataset)
    metrics, _ = run(task_for(k_test=3), dataset, max_bad_sample_fraction=0.5)
    keep = [0, 2, 3]
    expected, _, _ = reference(dataset, 3, keep)
    assert metrics["num_unreadable"] == 1
    assert metrics["num_images"] == 3 and metrics["num_texts"] == len(dataset.text) - len(dataset.img2txt[1])
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key


def test_text_length_setting_reaches_the_model_and_cut_captions_are_counted(fixtures):
    dataset = split(fixtures)
    metrics, model = run(task_for(k_test=3, text_max_length=4), dataset)
    assert set(model.max_lengths) == {4}
    assert metrics["num_texts_truncated"] == len(dataset.text)   # [CLS] + 5 words > 4


def test_batch_size_and_feature_batches_do_not_change_the_result(fixtures):
    dataset = split(fixtures)
    one, _ = run(task_for(k_test=3), dataset, batch_size=4)
    other, _ = run(task_for(k_test=3, feature_batch_size=1, text_batch_size=2,
                            offload_image_embeds=True), dataset, batch_size=1)
    assert one == other


def test_settings_defaults_and_errors():
    task = task_for()
    assert task.retrieval.k_test == 128 and task.retrieval.text_max_length == 35
    assert {"txt_r1", "img_r10", "r_mean", "txt_r_mean"} <= task.metric_names()
    for entry, message in (({"k_tset": 3}, "Did you mean 'k_test'"),
                           ({"k_test": 0}, "k_test must be an integer >= 1"),
                           ({"k_test": True}, "k_test"),
                           ({"offload_image_embeds": "yes"}, "true or false"),
                           ({"eval_subset": 10}, "eval_subset"),
                           ({"prompt": "A photo of"}, "does not read 'prompt'")):
        with pytest.raises(ConfigError, match=message):
            task_for(**entry)


def test_a_model_without_the_retrieval_methods_is_refused_before_loading():
    model_cls = registry.get_model_class("instructblip")
    with pytest.raises(ConfigError, match="retrieval_image_features"):
        registry.get_task_class("retrieval").for_dataset(
            "coco_retrieval", compose_dataset("coco_retrieval"), model_cls=model_cls)
    registry.get_task_class("retrieval").for_dataset(
        "coco_retrieval", compose_dataset("coco_retrieval"), model_cls=FakeRetrievalModel)


def test_default_yamls_name_the_task_and_lavis_k():
    for name in ("coco_retrieval", "flickr30k_retrieval"):
        entry = compose_dataset(name)
        assert entry.task == "retrieval" and entry.k_test == 128 and entry.text_max_length == 35
        assert entry.vis_processor.eval.image_size == 364


class _Gallery(torch.utils.data.Dataset):
    """An in-memory retrieval split: random images, 1 to 7 captions each. No two captions
    share a bag of words: the fake's features of such captions would differ only in
    rounding, and the order of near-ties is not what is tested here (the hand-built
    matrices of test_retrieval_metrics.py test ties)."""

    def __init__(self, n, seed=0):
        g = torch.Generator().manual_seed(seed)
        words = ["dog", "cat", "red", "bus", "two", "tree", "man", "blue", "sign", "table"]
        self.images = torch.rand((n, 3, 8, 8), generator=g)
        self.text, self.img2txt, self.txt2img, bags = [], [], [], set()
        for i in range(n):
            count = int(torch.randint(1, 8, (1,), generator=g))
            self.img2txt.append(list(range(len(self.text), len(self.text) + count)))
            while len(self.text) < self.img2txt[-1][-1] + 1:
                picks = torch.randint(0, len(words), (int(torch.randint(2, 6, (1,), generator=g)),), generator=g)
                if tuple(sorted(picks.tolist())) not in bags:
                    bags.add(tuple(sorted(picks.tolist())))
                    self.text.append(" ".join(words[j] for j in picks))
                    self.txt2img.append(i)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "index": i}


@pytest.mark.parametrize("seed", [0, 6])
@pytest.mark.parametrize("k", [1, 7, 40])
def test_a_larger_gallery_equals_lavis_evaluation(k, seed):
    from lavis_ib.tasks.metrics.retrieval import recall_metrics
    from lavis_ib.tasks.retrieval_scoring import RetrievalSettings, score_gallery

    dataset = _Gallery(30, seed)
    settings = RetrievalSettings(k_test=k, feature_batch_size=7, text_batch_size=16, feature_workers=0)
    ranks = score_gallery(FakeRetrievalModel(seed), dataset, settings, torch.device("cpu"), "gallery")
    i2t, t2i = lavis_score_matrices(FakeRetrievalModel(seed), dataset.images, dataset.text, k)
    expected, txt_ranks, img_ranks = lavis_report(i2t, t2i, dataset.txt2img, dataset.img2txt)
    assert [ranks.txt_rank[i] for i in range(len(dataset))] == txt_ranks
    assert [ranks.img_rank[t] for t in range(len(dataset.text))] == img_ranks
    got = recall_metrics(txt_ranks, img_ranks)
    assert all(got[key] == pytest.approx(value) for key, value in expected.items())

"""Retrieval recall@K equals LAVIS's formula (tests/tasks/retrieval_reference.py) on
hand-built score matrices: an image with 5 captions, one with several, ties."""
import numpy as np
import pytest
import torch

from lavis_ib.tasks.metrics.retrieval import positions, ranks_from_matrices, recall_metrics
from tests.tasks.retrieval_reference import lavis_report

# 4 images, 12 captions: image 0 has 5 (0-4), image 1 has 4 (5-8), image 2 two, image 3 one
IMG2TXT = [[0, 1, 2, 3, 4], [5, 6, 7, 8], [9, 10], [11]]
TXT2IMG = [i for i, caps in enumerate(IMG2TXT) for _ in caps]

# image -> text scores, -100 outside a (pretend) top-4, with ties on purpose
I2T = [
    # image 0: its best caption (3) ties with caption 9 of image 2 at 0.8
    [0.1, -100, 0.5, 0.8, -100, -100, -100, -100, -100, 0.8, -100, -100],
    # image 1: its captions lose to 0, 1 and 11; ties at 0.6 between 7 and 11
    [0.9, 0.9, -100, -100, -100, -100, -100, 0.6, -100, -100, -100, 0.6],
    # image 2: none of its captions in the top 4: they tie at -100 with everything else
    [0.3, 0.2, 0.4, 0.1, -100, -100, -100, -100, -100, -100, -100, -100],
    # image 3: its only caption first
    [-100, -100, -100, -100, 0.2, 0.3, -100, -100, -100, -100, 0.1, 0.7],
]
# text -> image scores (12 x 4), top-2 kept, ties between images
T2I = [[0.5, 0.5, -100, -100], [0.2, 0.9, -100, -100], [0.7, -100, 0.1, -100],
       [-100, 0.4, -100, 0.4], [0.6, -100, -100, 0.6], [0.3, 0.3, -100, -100],
       [-100, 0.2, 0.8, -100], [0.1, -100, -100, 0.9], [-100, 0.5, 0.5, -100],
       [-100, -100, 0.3, 0.2], [0.4, -100, 0.4, -100], [-100, -100, 0.6, 0.6]]


def test_positions_order_equal_scores_as_a_reversed_stable_sort():
    row = torch.tensor([0.5, 0.9, 0.9, 0.1, 0.9])
    # ascending stable: 3, 0, 1, 2, 4 -> reversed: 4, 2, 1, 0, 3
    assert positions(row, [4, 2, 1, 0, 3]).tolist() == [0, 1, 2, 3, 4]


def test_hand_built_ranks_by_hand():
    txt, img = ranks_from_matrices(torch.tensor(I2T), torch.tensor(T2I), IMG2TXT, TXT2IMG)
    # image 0: caption 3 ties caption 9 (later index first) -> position 1
    # image 1: 0, 1 and 11 (later than 7 among the 0.6 tie) come first -> caption 7 at 3
    # image 2: all of its captions at -100: after the 4 kept ones, 10 before 9 -> 4 + (11 - 10)
    # image 3: caption 11 first
    assert txt == [1, 3, 5, 0]
    # caption 3 (image 0): images 3 and 1 tie at 0.4, then the -100s: 2 before 0
    # caption 11 (image 3): images 2 and 3 tie at 0.6, the later one (3) first
    assert [img[0], img[1], img[3], img[4], img[11]] == [1, 1, 3, 1, 0]


def test_recall_equals_lavis_formula_with_ties():
    expected, txt_ref, img_ref = lavis_report(I2T, T2I, TXT2IMG, IMG2TXT)
    txt, img = ranks_from_matrices(torch.tensor(I2T), torch.tensor(T2I), IMG2TXT, TXT2IMG)
    assert txt == txt_ref and img == img_ref
    got = recall_metrics(txt, img)
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key]), key


@pytest.mark.parametrize("seed", range(4))
def test_recall_equals_lavis_formula_on_many_ties(seed):
    """Scores in {0, 1, 2, -100}: most rows are full of ties."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 7, size=9)
    img2txt, start = [], 0
    for c in counts:
        img2txt.append(list(range(start, start + c)))
        start += c
    txt2img = [i for i, caps in enumerate(img2txt) for _ in caps]
    values = np.array([0.0, 1.0, 2.0, -100.0])
    i2t = values[rng.integers(0, 4, size=(len(img2txt), start))]
    t2i = values[rng.integers(0, 4, size=(start, len(img2txt)))]
    expected, txt_ref, img_ref = lavis_report(i2t, t2i, txt2img, img2txt)
    txt, img = ranks_from_matrices(torch.tensor(i2t), torch.tensor(t2i), img2txt, txt2img)
    assert (txt, img) == (txt_ref, img_ref)
    got = recall_metrics(txt, img)
    assert all(got[k] == pytest.approx(v) for k, v in expected.items())


def test_without_ties_equals_lavis_default_sort():
    """LAVIS's own call (numpy's default sort kind) where no two scores are equal."""
    rng = np.random.default_rng(7)
    img2txt = [list(range(5 * i, 5 * i + 5)) for i in range(20)]
    txt2img = [i for i, caps in enumerate(img2txt) for _ in caps]
    i2t, t2i = rng.normal(size=(20, 100)), rng.normal(size=(100, 20))
    expected, _, _ = lavis_report(i2t, t2i, txt2img, img2txt, kind="quicksort")
    txt, img = ranks_from_matrices(torch.tensor(i2t), torch.tensor(t2i), img2txt, txt2img)
    got = recall_metrics(txt, img)
    assert all(got[k] == pytest.approx(v) for k, v in expected.items())
    assert 0 < got["txt_r10"] < 100   # not a degenerate case


def test_recall_metric_names_are_lavis_names():
    got = recall_metrics([0, 4, 9, 10], [0])
    assert got["txt_r1"] == 25.0 and got["txt_r5"] == 50.0 and got["txt_r10"] == 75.0
    assert got["txt_r_mean"] == pytest.approx(50.0) and got["img_r_mean"] == 100.0
    assert got["r_mean"] == pytest.approx(75.0)

"""Ranks, MRR, recall@k, mean rank, word-set probabilities and AUC."""
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from lavis_ib.tasks.metrics.rank import (best_first, binary_probability, log_sum_exp,
                                         ranks_of_targets, retrieval_metrics, roc_auc)


def test_ranks_of_targets_with_ties_and_padding():
    scores = torch.tensor([[0.1, 0.5, 0.3, -math.inf],
                           [1.0, 1.0, 1.0, 0.0],
                           [0.0, -1.0, -2.0, -3.0]])
    assert ranks_of_targets(scores, [2, 1, 3]) == [2, 2, 4]
    assert ranks_of_targets(scores, [1, 0, 0]) == [1, 1, 1]
    assert best_first(scores)[1].tolist() == [0, 1, 2, 3]   # stable for ties


def test_retrieval_metrics_on_crafted_ranks():
    ranks = [1, 2, 5, 10, 11, 100]
    m = retrieval_metrics(ranks)
    assert m["mrr"] == pytest.approx(100 * (1 + 1 / 2 + 1 / 5 + 1 / 10 + 1 / 11 + 1 / 100) / 6)
    assert m["r1"] == pytest.approx(100 / 6)
    assert m["r5"] == pytest.approx(300 / 6)
    assert m["r10"] == pytest.approx(400 / 6)
    assert m["mean_rank"] == pytest.approx(129 / 6)


def test_binary_probability_is_word_set_normalised():
    pos, neg = [math.log(0.2), math.log(0.1)], [math.log(0.1)]
    assert log_sum_exp(pos) == pytest.approx(math.log(0.3))
    assert binary_probability(pos, neg) == pytest.approx(0.3 / 0.4)
    assert binary_probability([-1000.0], [0.0]) == pytest.approx(0.0, abs=1e-12)
    assert binary_probability([0.0], [-1000.0]) == pytest.approx(1.0)
    assert binary_probability([-math.inf], [-math.inf]) == 0.5


def test_auc_equals_scikit_learn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=50).tolist()
    probs = rng.random(50).round(2).tolist()   # rounded: ties included
    assert roc_auc(labels, probs) == pytest.approx(100 * roc_auc_score(labels, probs))
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1, 1], [0.2, 0.3])

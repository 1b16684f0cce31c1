"""Ranking and classification metrics: candidate ranks, MRR, recall@k, mean rank, AUC.

Ranks are 1-based. Ties are broken by candidate order (a stable sort, best first), so a
rank never depends on the hardware's summation order beyond the scores themselves.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch


def ranks_of_targets(scores: torch.Tensor, targets: Sequence[int]) -> list[int]:
    """The 1-based rank of each row's target among its candidates.

    Args:
        scores: (B, C) scores, higher is better; padded candidates hold -inf.
        targets: the index of each row's ground-truth candidate.
    """
    out = []
    for row, t in zip(scores, targets):
        s = row[int(t)]
        better = int((row > s).sum())
        tied_before = int((row[: int(t)] == s).sum())
        out.append(1 + better + tied_before)
    return out


def best_first(scores: torch.Tensor) -> torch.Tensor:
    """(B, C) candidate indices, best first (stable for ties)."""
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices


def retrieval_metrics(ranks: Sequence[int], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """VisDial metrics: MRR and recall@k in percent, mean rank (raw)."""
    if not ranks:
        raise ValueError("no ranks")
    n = len(ranks)
    out = {"mrr": 100.0 * sum(1.0 / r for r in ranks) / n}
    for k in ks:
        out[f"r{k}"] = 100.0 * sum(1 for r in ranks if r <= k) / n
    out["mean_rank"] = sum(ranks) / n
    return out


def log_sum_exp(values: Sequence[float]) -> float:
    finite = [v for v in values if v != float("-inf")]
    if not finite:
        return float("-inf")
    m = max(finite)
    return m + math.log(sum(math.exp(v - m) for v in finite))


def binary_probability(positive_scores: Sequence[float], negative_scores: Sequence[float]) -> float:
    """p(positive) from candidate log-likelihoods of two word sets.

    log-sum-exp over each set's scores gives log p(set); normalising the two sets against
    each other gives p(positive) = sigmoid(lse(pos) - lse(neg)).
    """
    lp, ln = log_sum_exp(positive_scores), log_sum_exp(negative_scores)
    if lp == ln == float("-inf"):
        return 0.5
    diff = lp - ln
    if diff >= 0:
        return 1.0 / (1.0 + math.exp(-diff))
    e = math.exp(diff)
    return e / (1.0 + e)


def roc_auc(labels: Sequence[int], probabilities: Sequence[float]) -> float:
    """ROC AUC in percent (scikit-learn's `roc_auc_score`).

    Raises:
        ValueError: the labels hold one class only (AUC is undefined).
    """
    from sklearn.metrics import roc_auc_score

    if len(set(int(x) for x in labels)) < 2:
        raise ValueError("AUC needs both classes among the labels")
    return 100.0 * float(roc_auc_score([int(x) for x in labels], list(probabilities)))

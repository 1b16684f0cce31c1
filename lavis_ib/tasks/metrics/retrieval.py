"""Image-text retrieval ranks and recall@K, as LAVIS's retrieval task reports them.

LAVIS's metric names and rank rule, with the order of tied scores fixed (`positions`), so
recall does not depend on a sort's tie-breaking."""
from __future__ import annotations

from typing import Sequence

import torch

KS = (1, 5, 10)
METRIC_NAMES = ("txt_r1", "txt_r5", "txt_r10", "txt_r_mean",
                "img_r1", "img_r5", "img_r10", "img_r_mean", "r_mean")


def positions(row: torch.Tensor, targets: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """0-based best-first positions of `targets` in the 1-D score `row` (ties: later
    index first).

    LAVIS orders a row with ``argsort(score)[::-1]``, which leaves the order of equal
    scores to numpy's sort; here it is fixed as the one a stable ascending sort gives once
    reversed: among equal scores the later gallery index comes first. Equal scores are
    rare except at the -100 given to pairs outside the re-ranked top k, where the ground
    truth ranks k or worse either way.
    """
    targets = torch.as_tensor(targets, dtype=torch.long, device=row.device).reshape(-1)
    values = row[targets].unsqueeze(1)                                   # (T, 1)
    better = (row.unsqueeze(0) > values).sum(dim=1)
    later = torch.arange(row.numel(), device=row.device).unsqueeze(0) > targets.unsqueeze(1)
    tied_later = ((row.unsqueeze(0) == values) & later).sum(dim=1)
    return better + tied_later


def best_rank(row: torch.Tensor, targets: Sequence[int]) -> int:
    """The best (smallest) position among a query's ground-truth items (image->text takes
    the best rank among the image's captions)."""
    if len(targets) == 0:
        raise ValueError("a query without ground-truth items has no rank")
    return int(positions(row, targets).min())


def ranks_from_matrices(scores_i2t: torch.Tensor, scores_t2i: torch.Tensor,
                        img2txt: Sequence[Sequence[int]], txt2img: Sequence[int]
                        ) -> tuple[list[int], list[int]]:
    """(image->text ranks per image, text->image ranks per text) of full score matrices
    (N images x M texts, M x N), 0-based."""
    txt = [best_rank(row, img2txt[i]) for i, row in enumerate(scores_i2t)]
    img = [best_rank(row, [txt2img[t]]) for t, row in enumerate(scores_t2i)]
    return txt, img


def recall_at(ranks: Sequence[int], k: int) -> float:
    """Percent of queries whose 0-based rank is below `k`."""
    if not ranks:
        raise ValueError("no ranks")
    return 100.0 * sum(1 for r in ranks if r < k) / len(ranks)


def recall_metrics(txt_ranks: Sequence[int], img_ranks: Sequence[int]) -> dict[str, float]:
    """LAVIS's metric names: txt_r1/5/10 (image->text), img_r1/5/10 (text->image), their
    means and r_mean, the mean of the two means; 0-based ranks in."""
    out: dict[str, float] = {}
    for prefix, ranks in (("txt", txt_ranks), ("img", img_ranks)):
        values = [recall_at(ranks, k) for k in KS]
        out.update({f"{prefix}_r{k}": v for k, v in zip(KS, values)})
        out[f"{prefix}_r_mean"] = sum(values) / len(values)
    out["r_mean"] = (out["txt_r_mean"] + out["img_r_mean"]) / 2
    return out

"""Console metrics are rounded per kind (scores to 2 decimals, counts as integers)."""
import math

from lavis_ib.common.metrics_text import metrics_line, rounded


def test_scores_are_rounded_and_counts_stay_integers():
    metrics = {"bleu4": 1.5106876984360446e-14, "cider": 123.456789, "acc": 49.996,
               "num_samples": 3, "num_truncated": 0}
    assert metrics_line(metrics) == "bleu4 0.00, cider 123.46, acc 50.00 (3 samples, 0 truncated)"
    assert rounded({"nocaps": metrics}) == {"nocaps": {"bleu4": 0.0, "cider": 123.46, "acc": 50.0,
                                                       "num_samples": 3, "num_truncated": 0}}
    assert metrics_line({"num_samples": 2}) == "no scores (2 samples)"
    assert metrics_line({"auc": math.nan}) == "auc nan"

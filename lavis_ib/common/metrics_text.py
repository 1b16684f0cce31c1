"""Metrics as people read them on a console; the files keep every digit.

Console lines round scores to two decimals and print counts as integers, while
`metrics.json`, `predictions.jsonl` and `log.jsonl` are written at full precision elsewhere."""
from __future__ import annotations

import math
from typing import Any, Mapping

# Every score lavis_ib reports is on a 0-100 scale (accuracy and AUC in percent, CIDEr, BLEU
# and METEOR x100, MRR and recall x100) or a rank, so two decimals resolve 1e-4 of the unit,
# finer than any difference a held-out number can show. Counts (`num_samples`,
# `num_truncated`, ...) are integers and print as such.
DECIMALS = 2


def rounded(value: Any) -> Any:
    """A score rounded to `DECIMALS`; integers, booleans, non-finite values and
    non-numbers unchanged; mappings rounded value by value."""
    if isinstance(value, Mapping):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, float) and math.isfinite(value):
        return round(value, DECIMALS)
    return value


def format_value(value: Any) -> str:
    """'12.35' for a score, '3' for a count, 'nan' / 'None' as they are."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.{DECIMALS}f}"
    return str(value)


def metrics_line(metrics: Mapping[str, Any]) -> str:
    """'acc 50.00, auc 25.00 (4 samples, 0 truncated)': scores first, counts after."""
    scores = [f"{k} {format_value(v)}" for k, v in metrics.items() if not k.startswith("num_")]
    counts = [f"{format_value(v)} {k[len('num_'):]}" for k, v in metrics.items()
              if k.startswith("num_")]
    text = ", ".join(scores) or "no scores"
    return f"{text} ({', '.join(counts)})" if counts else text

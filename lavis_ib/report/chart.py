"""The bar charts of `lavis-ib report`: one group of bars per column of the table (a
held-out dataset, an average).

One chart function for every report, so a missing number looks the same everywhere and is
never drawn as a zero (`grouped_bars`)."""
from __future__ import annotations

from typing import Any, Sequence

MISSING_LABEL = "n/a"
Series = tuple[str, Sequence[float | None], str | None]   # (legend label, values, hatch)


def grouped_bars(series: Sequence[Series], groups: Sequence[str], title: str) -> Any:
    """A matplotlib Figure (Agg backend, no display) with one bar per series and group.

    A measured value is a bar with its number written above it, so a measured 0 reads "0.0"
    on the axis line; a value the run (or the paper) does not have gets no bar but a grey,
    italic "n/a" label at that place. The two can therefore never be mistaken for each
    other, which a zero-height bar alone would allow.

    Args:
        series: (legend label, one value or None per group, hatch pattern or None).
        groups: the x tick labels.
        title: the chart's title.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(12, 1.2 * len(series) + 10), 4.8))
    top = max([v for _, values, _ in series for v in values if v is not None] or [1.0])
    for i, (label, values, hatch) in enumerate(series):
        xs = [x - 0.4 + width * (i + 0.5) for x in range(len(groups))]
        measured = [(x, v) for x, v in zip(xs, values) if v is not None]
        bars = ax.bar([x for x, _ in measured], [v for _, v in measured], width,
                      label=label, hatch=hatch)
        ax.bar_label(bars, labels=[f"{v:.1f}" for _, v in measured], fontsize=7,
                     rotation=90, padding=2)
        for x, v in zip(xs, values):
            if v is None:
                ax.text(x, 0.02 * top, MISSING_LABEL, ha="center", va="bottom", fontsize=7,
                        rotation=90, color="0.35", style="italic")
    ax.set_xlim(-0.6, len(groups) - 0.4)   # a group without any bar keeps its place
    ax.set_xticks(list(range(len(groups))))
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_ylim(0, top * 1.18)   # room for the value labels above the tallest bar
    ax.set_ylabel("score (CIDEr x100 / % / MRR x100)")
    ax.set_title(f"{title}   (n/a: no number)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save(fig: Any, path: str) -> None:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100)
    plt.close(fig)

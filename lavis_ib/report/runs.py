"""`lavis-ib report RUN RUN ...`: several runs and the paper's rows in one table and chart.

Table 1 compares models side by side (InstructBLIP beside its BLIP-2 baseline), so several
runs go into one report, each read as a single-run report reads it (`report_runs`)."""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from typing import Sequence

from lavis_ib.common.errors import ConfigError, did_you_mean
from lavis_ib.report.paper import HELD_OUT, METRIC, ROW_OF_MODEL_TYPE, TABLE_1, TITLES, table1_value


@dataclass
class RunColumn:
    label: str
    model_type: str
    values: dict[str, float | None]     # dataset -> our number (None: not evaluated)
    splits: dict[str, str | None]


def run_columns(run_dirs: Sequence[str], model_type_of, collect) -> list[RunColumn]:
    """One column per run. `model_type_of(run_dir)` and `collect(run_dir, paper_row)` are
    the single-run report's readers (no paper row: the paper's values come later)."""
    columns = []
    for run_dir in run_dirs:
        if not os.path.isdir(run_dir):
            raise ConfigError(f"run folder '{run_dir}' does not exist.")
        model_type = model_type_of(run_dir)
        rows = collect(run_dir, None)
        arch = _arch(run_dir)   # tiny types share names across models: say which model
        name = os.path.basename(os.path.normpath(run_dir))
        label = f"{name} ({arch} {model_type})" if arch else f"{name} ({model_type})"
        columns.append(RunColumn(label, model_type, {r.dataset: r.ours for r in rows},
                                 {r.dataset: r.split for r in rows}))
    return columns


def _arch(run_dir: str) -> str | None:
    from omegaconf import OmegaConf

    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        return None
    arch = OmegaConf.select(OmegaConf.load(path), "model.arch")
    return str(arch) if arch else None


def paper_rows(columns: Sequence[RunColumn], extra: Sequence[str] = ()) -> list[str]:
    """The paper rows to show: each run's model type's row, then `extra`, once each."""
    for row in extra:
        if row not in TABLE_1.row_names:
            raise ConfigError(f"--compare '{row}' is not a Table 1 row."
                              f"{did_you_mean(row, TABLE_1.row_names)} Rows: "
                              f"{'; '.join(TABLE_1.row_names)}.")
    rows = [ROW_OF_MODEL_TYPE[c.model_type] for c in columns if c.model_type in ROW_OF_MODEL_TYPE]
    return list(dict.fromkeys([*rows, *extra]))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def markdown_runs(columns: Sequence[RunColumn], rows: Sequence[str]) -> str:
    head = ["dataset", "metric", *[c.label for c in columns], *[f"paper: {r}" for r in rows]]
    lines = ["Zero-shot held-out results: runs side by side with the paper's Table 1", "",
             "| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for d in HELD_OUT:
        cells = [TITLES[d], METRIC[d], *[_fmt(c.values[d]) for c in columns],
                 *[_fmt(table1_value(r, d)) for r in rows]]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"{c.label}: {sum(v is not None for v in c.values.values())} of {len(HELD_OUT)} "
              f"datasets evaluated" for c in columns]
    if not rows:
        lines.append("No run's model type has a Table 1 row; add one with --compare ROW.")
    return "\n".join(lines) + "\n"


def csv_runs(columns: Sequence[RunColumn], rows: Sequence[str]) -> str:
    """Long format: one line per (dataset, source), source = a run label or a paper row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["dataset", "title", "metric", "source", "kind", "split", "value"])
    for d in HELD_OUT:
        for c in columns:
            value = c.values[d]
            writer.writerow([d, TITLES[d], METRIC[d], c.label, "run", c.splits[d] or "",
                             "" if value is None else f"{value:.4f}"])
        for r in rows:
            value = table1_value(r, d)
            writer.writerow([d, TITLES[d], METRIC[d], r, "paper", "",
                             "" if value is None else f"{value:.1f}"])
    return out.getvalue()


def chart_runs(columns: Sequence[RunColumn], rows: Sequence[str], path: str) -> None:
    """A group of bars per dataset: the runs, then the paper rows (hatched); a dataset a
    run has no result for reads "n/a" (lavis_ib.report.chart)."""
    from lavis_ib.report.chart import grouped_bars, save

    series = [(c.label, [c.values[d] for d in HELD_OUT], None) for c in columns]
    series += [(f"paper: {r}", [table1_value(r, d) for d in HELD_OUT], "//") for r in rows]
    fig = grouped_bars(series, [f"{TITLES[d]}\n({METRIC[d]})" for d in HELD_OUT],
                       "Zero-shot held-out evaluation: runs vs. Table 1")
    save(fig, path)


def report_runs(run_dirs: Sequence[str], out_dir: str | None, compare: Sequence[str],
                model_type_of, collect) -> str:
    """Write the three files; returns the Markdown table.

    A column per run (labelled by its folder and model type), then the paper's row of each
    run's model type (plus any `compare` row), one group of bars per held-out dataset. Each
    run's results are found exactly as for a single-run report (`collect`), so both reports
    agree on which split and metric a number is. Writes `table1_runs.md`, `table1_runs.csv`
    and `table1_runs.png` to `out_dir` (default `<first run>/report`).
    """
    columns = run_columns(run_dirs, model_type_of, collect)
    rows = paper_rows(columns, compare)
    out_dir = out_dir or os.path.join(run_dirs[0], "report")
    os.makedirs(out_dir, exist_ok=True)
    text = markdown_runs(columns, rows)
    with open(os.path.join(out_dir, "table1_runs.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out_dir, "table1_runs.csv"), "w") as f:
        f.write(csv_runs(columns, rows))
    chart_runs(columns, rows, os.path.join(out_dir, "table1_runs.png"))
    print(text)
    print(f"wrote {out_dir}/table1_runs.md, table1_runs.csv, table1_runs.png")
    return text

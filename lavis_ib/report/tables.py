"""`lavis-ib report RUN_DIR`: our held-out results beside the paper's Table 1.

Reads `<RUN_DIR>/config.yaml` (the model type picks the paper row) and every
`<RUN_DIR>/eval/<dataset>_<split>/metrics.json` of the 13 held-out datasets, and writes
`table1.md`, `table1.csv` and `table1.png` (ours vs. the paper, a bar per dataset) to
`<RUN_DIR>/report/` (or `--out`). The Markdown table is also printed. A model type with
no Table 1 row (the tiny test models) gets our numbers alone, and a note on `--compare`. Given a training
run's folder, the report reads its newest evaluation, `<RUN_DIR>/eval/<name>/`, which has
the same layout (`evaluation_folder`).

    lavis-ib report output/zeroshot_vicuna7b
    lavis-ib report RUN_DIR --compare "InstructBLIP FlanT5XL" --out report/
    lavis-ib report RUN_A RUN_B ...      # several runs in one table (lavis_ib.report.runs)
    lavis-ib report RUN ... --table 2    # Table 2, 3 or fig4 instead (lavis_ib.report.compare)
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from typing import Sequence

from lavis_ib.common.errors import ConfigError, DataError
from lavis_ib.report.paper import HELD_OUT, METRIC, TABLE_1, TITLES, table1_value

SPLIT_PREFERENCE = ("test", "testdev", "test_dev", "val")


@dataclass
class Row:
    dataset: str
    metric: str
    split: str | None
    ours: float | None
    paper: float | None   # None: no paper row to compare with

    @property
    def diff(self) -> float | None:
        return None if self.ours is None or self.paper is None else self.ours - self.paper


def _model_type(run_dir: str, compare: str | None) -> str:
    from omegaconf import OmegaConf

    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        if compare:  # the row is given: the model type only labels the table
            return "model type unknown"
        raise ConfigError(f"{path} is missing, so the model type (and its Table 1 row) is "
                          f"unknown; pass --compare ROW or point at a run folder holding "
                          f"the saved config.")
    cfg = OmegaConf.load(path)
    model_type = OmegaConf.select(cfg, "model.model_type")
    if not model_type:
        raise ConfigError(f"{path} has no model.model_type.")
    return str(model_type)


def _find_split(eval_dir: str, dataset: str) -> tuple[str | None, str | None]:
    """(split, metrics.json path) of `dataset`, preferring test over val splits."""
    if not os.path.isdir(eval_dir):
        return None, None
    found = {}
    for entry in os.listdir(eval_dir):
        path = os.path.join(eval_dir, entry, "metrics.json")
        if entry.startswith(dataset + "_") and os.path.isfile(path):
            split = entry[len(dataset) + 1:]
            if split and not any(entry.startswith(other + "_") and len(other) > len(dataset)
                                 for other in HELD_OUT):
                found[split] = path
    if not found:
        return None, None
    ordered = [s for s in SPLIT_PREFERENCE if s in found] + sorted(found)
    return ordered[0], found[ordered[0]]


def collect(run_dir: str, paper_row: str | None) -> list[Row]:
    """One row per held-out dataset (ours is None where the run has no result, paper
    None without a `paper_row`)."""
    rows = []
    for dataset in HELD_OUT:
        split, path = _find_split(os.path.join(run_dir, "eval"), dataset)
        ours = None
        if path is not None:
            try:
                with open(path) as f:
                    metrics = json.load(f)
            except (OSError, ValueError) as exc:
                raise DataError(f"cannot read {path}: {exc}") from None
            value = metrics.get(METRIC[dataset])
            if isinstance(value, (int, float)) and math.isfinite(value):
                ours = float(value)
        paper = table1_value(paper_row, dataset) if paper_row else None
        rows.append(Row(dataset, METRIC[dataset], split, ours, paper))
    if all(r.ours is None for r in rows):
        raise DataError(f"{run_dir}: no held-out results found under "
                        f"{os.path.join(run_dir, 'eval')}/<dataset>_<split>/metrics.json "
                        f"(datasets: {', '.join(HELD_OUT)}).")
    return rows


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def markdown(rows: Sequence[Row], paper_row: str | None, model_type: str) -> str:
    if paper_row is None:
        return _markdown_ours(rows, model_type)
    lines = [f"Zero-shot held-out results: ours ({model_type}) vs. paper ({paper_row}, Table 1)",
             "", "| dataset | split | metric | ours | paper | diff |",
             "|---|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {TITLES[r.dataset]} | {r.split or '-'} | {r.metric} | "
                     f"{_fmt(r.ours)} | {_fmt(r.paper)} | {_fmt(r.diff, signed=True)} |")
    done = [r for r in rows if r.ours is not None]
    lines += ["", f"{len(done)} of {len(rows)} datasets evaluated; '-' = no result in the run."]
    return "\n".join(lines) + "\n"


def _markdown_ours(rows: Sequence[Row], model_type: str) -> str:
    """Our numbers alone: the model type has no Table 1 row (e.g. a tiny test model)."""
    lines = [f"Zero-shot held-out results: ours ({model_type})", "",
             "| dataset | split | metric | ours |", "|---|---|---|---:|"]
    lines += [f"| {TITLES[r.dataset]} | {r.split or '-'} | {r.metric} | {_fmt(r.ours)} |"
              for r in rows]
    done = [r for r in rows if r.ours is not None]
    lines += ["", f"{len(done)} of {len(rows)} datasets evaluated; '-' = no result in the run.",
              f"Model type '{model_type}' has no row in the paper's Table 1; add one to compare "
              f"with: --compare ROW, ROW one of: {'; '.join(TABLE_1.row_names)}."]
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[Row]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["dataset", "title", "split", "metric", "ours", "paper", "diff"])
    for r in rows:
        writer.writerow([r.dataset, TITLES[r.dataset], r.split or "", r.metric,
                         "" if r.ours is None else f"{r.ours:.4f}",
                         "" if r.paper is None else f"{r.paper:.1f}",
                         "" if r.diff is None else f"{r.diff:.4f}"])
    return out.getvalue()


def bar_chart(rows: Sequence[Row], paper_row: str | None, model_type: str, path: str) -> None:
    """Ours (and the paper's row) per dataset; a dataset not evaluated reads "n/a"."""
    from lavis_ib.report.chart import grouped_bars, save

    series = [(f"ours ({model_type})", [r.ours for r in rows], None)]
    if paper_row is not None:
        series.append((f"paper ({paper_row})", [r.paper for r in rows], "//"))
    title = ("Zero-shot held-out evaluation vs. InstructBLIP Table 1" if paper_row
             else "Zero-shot held-out evaluation")
    save(grouped_bars(series, [f"{TITLES[r.dataset]}\n({r.metric})" for r in rows], title), path)


def evaluation_folder(run_dir: str) -> str:
    """The folder whose eval/ holds the results: `run_dir` itself (an evaluation run), or
    for a training run the newest evaluation under `run_dir/eval/<name>/` (each has its
    own config.yaml); the choice is printed when there are several."""
    eval_dir = os.path.join(run_dir, "eval")
    if not os.path.isdir(eval_dir) or any(
            os.path.isfile(os.path.join(eval_dir, e, "metrics.json"))
            for e in os.listdir(eval_dir)):
        return run_dir
    found = [os.path.join(eval_dir, e) for e in os.listdir(eval_dir)
             if os.path.isfile(os.path.join(eval_dir, e, "config.yaml"))
             and os.path.isdir(os.path.join(eval_dir, e, "eval"))]
    if not found:
        return run_dir
    found.sort(key=lambda d: os.path.getmtime(os.path.join(d, "eval")))
    if len(found) > 1:
        print(f"{run_dir} has {len(found)} evaluations; reporting the newest, {found[-1]} "
              f"(give one of {', '.join(found)} to choose)")
    return found[-1]

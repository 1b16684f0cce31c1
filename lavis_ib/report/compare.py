"""`lavis-ib report RUN ... --table 2|3|fig4`: one of the paper's tables with our runs
beside the rows they match.

Ablations and finetuning results are read row by row against the paper's, so each run
is printed under the row it reproduces (`report_table`; docs/evaluation.md shows the calls)."""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from typing import Sequence

from lavis_ib.common.errors import ConfigError, DataError, did_you_mean
from lavis_ib.report.mapping import MEASURES, Value, match_row, run_settings, value_of
from lavis_ib.report.paper import TABLES
from lavis_ib.report.paper_types import PaperTable

MISSING = "n/a"


@dataclass
class RunRow:
    label: str
    row: str | None          # the paper row it matches (None: none)
    matched_by: str          # "config" | "--row" | ""
    values: dict[str, Value]


def paper_table(key: str) -> PaperTable:
    if key not in TABLES:
        raise ConfigError(f"--table '{key}' is not one of {', '.join(TABLES)}."
                          f"{did_you_mean(key, TABLES)}")
    return TABLES[key]


def file_stem(table: PaperTable) -> str:
    return "fig4" if table.key == "fig4" else f"table{table.key}"


def _label(run_dir: str, settings: dict) -> str:
    name = os.path.basename(os.path.normpath(run_dir))
    kind = " ".join(str(settings[k]) for k in ("arch", "model_type") if settings.get(k))
    return f"{name} ({kind})" if kind else name


def collect_runs(table: PaperTable, run_dirs: Sequence[str],
                 rows: Sequence[str] = ()) -> list[RunRow]:
    """One RunRow per run. `rows[i]` names run i's paper row (the rest come from each
    run's config.yaml)."""
    if len(rows) > len(run_dirs):
        raise ConfigError(f"{len(rows)} --row given for {len(run_dirs)} run folder(s): give "
                          f"at most one per run, in the runs' order.")
    for row in rows:
        if row not in table.row_names:
            raise ConfigError(f"--row '{row}' is not a row of {table.source.item}."
                              f"{did_you_mean(row, table.row_names)} Rows: "
                              f"{'; '.join(table.row_names)}.")
    from lavis_ib.report.tables import evaluation_folder

    out = []
    for i, run_dir in enumerate(run_dirs):
        if not os.path.isdir(run_dir):
            raise ConfigError(f"run folder '{run_dir}' does not exist.")
        folder = evaluation_folder(run_dir)
        settings = run_settings(folder)
        if i < len(rows):
            row, by = rows[i], "--row"
        else:
            row = match_row(table.key, settings)
            by = "config" if row else ""
        eval_dir = os.path.join(folder, "eval")
        values = {c.key: value_of(eval_dir, MEASURES[table.key][c.key]) for c in table.columns}
        if all(v.value is None and not v.read for v in values.values()):
            wanted = sorted({m.split(".")[0] for v in values.values() for m in v.missing})
            raise DataError(f"{run_dir}: no results for {table.source.item} under "
                            f"{eval_dir}/<dataset>_<split>/metrics.json (datasets: "
                            f"{', '.join(wanted)}).")
        out.append(RunRow(_label(run_dir, settings), row, by, values))
    return out


def _ordered(table: PaperTable, runs: Sequence[RunRow]) -> list[tuple[str, object]]:
    """('paper', PaperRow) and ('run', RunRow) in print order."""
    order: list[tuple[str, object]] = []
    for row in table.rows:
        order.append(("paper", row))
        order += [("run", r) for r in runs if r.row == row.name]
    order += [("run", r) for r in runs if r.row is None]
    return order


def _fmt(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1f}"


def markdown(table: PaperTable, runs: Sequence[RunRow]) -> str:
    figure = " (paper values read from the figure)" if table.figure else ""
    lines = [f"{table.source.item}: {table.title}, the paper beside our runs{figure}",
             f"Source: {table.source.cite()}", "",
             "| row | " + " | ".join(c.title for c in table.columns) + " |",
             "|---|" + "---:|" * len(table.columns)]
    for kind, item in _ordered(table, runs):
        if kind == "paper":
            cells = [_fmt(item.values[c.key]) + ("*" if c.key in item.notes else "")
                     for c in table.columns]
            name = f"paper: {item.name}"
        else:
            cells = [_fmt(item.values[c.key].value) for c in table.columns]
            name = f"ours: {item.label}" if item.row else f"ours, no paper row: {item.label}"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    specs = MEASURES[table.key]
    lines += ["", "Columns: " + "; ".join(f"{c.title} = {c.metric}" for c in table.columns) + ".",
              "Ours: " + "; ".join(f"{c.title} = {specs[c.key].describe()}"
                                   for c in table.columns) + ".",
              f"{MISSING}: no number (the paper prints none or we did not read it; the run "
              f"has no result). *: see the notes."]
    if table.note:
        lines.append(table.note)
    notes: dict[str, dict[str, list[str]]] = {}   # text -> row -> column titles
    for row in table.rows:
        for c in table.columns:
            if c.key in row.notes:
                notes.setdefault(row.notes[c.key], {}).setdefault(row.name, []).append(c.title)
    if notes:
        lines += ["", "Notes:"]
        lines += ["- " + "; ".join(f"{row} ({', '.join(cols)})" for row, cols in cells.items())
                  + f": {text}" for text, cells in notes.items()]
    if runs:
        lines += ["", "Runs:"]
        for run in runs:
            lines.append(f"- {run.label}: " + _run_note(table, run))
    return "\n".join(lines) + "\n"


def _run_note(table: PaperTable, run: RunRow) -> str:
    if run.row:
        head = f"row '{run.row}' ({'from its config' if run.matched_by == 'config' else '--row'})"
    else:
        head = "matches no row (name it with --row)"
    read = sorted({e for v in run.values.values() for e in v.read})
    parts = [head, "read " + (", ".join(read) if read else "nothing")]
    for c in table.columns:
        v = run.values[c.key]
        if v.missing and v.read:
            parts.append(f"{c.title} needs {', '.join(v.missing)} (missing)")
    return "; ".join(parts)


def csv_text(table: PaperTable, runs: Sequence[RunRow]) -> str:
    """Long format: one line per (row, column)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["table", "row", "kind", "label", "column", "title", "metric", "read",
                     "value", "from_figure", "note"])
    for kind, item in _ordered(table, runs):
        for c in table.columns:
            if kind == "paper":
                value = item.values[c.key]
                writer.writerow([table.key, item.name, "paper", table.source.cite(), c.key,
                                 c.title, c.metric, "", "" if value is None else f"{value:.1f}",
                                 int(item.from_figure), item.notes.get(c.key, "")])
            else:
                v = item.values[c.key]
                note = f"missing {', '.join(v.missing)}" if v.missing else ""
                writer.writerow([table.key, item.row or "", "run", item.label, c.key, c.title,
                                 c.metric, ";".join(v.read),
                                 "" if v.value is None else f"{v.value:.4f}", 0, note])
    return out.getvalue()


def chart(table: PaperTable, runs: Sequence[RunRow], path: str) -> None:
    """One group of bars per column: the paper's rows hatched, each run solid after the
    row it matches; a missing number reads "n/a" (lavis_ib.report.chart)."""
    from lavis_ib.report.chart import grouped_bars, save

    series = []
    for kind, item in _ordered(table, runs):
        if kind == "paper":
            series.append((f"paper: {item.name}", [item.values[c.key] for c in table.columns],
                           "//"))
        else:
            series.append((f"ours: {item.label}", [item.values[c.key].value for c in table.columns],
                           None))
    figure = ", paper values read from the figure" if table.figure else ""
    fig = grouped_bars(series, [c.title for c in table.columns],
                       f"{table.source.item}: paper vs. runs{figure}")
    save(fig, path)


def report_table(key: str, run_dirs: Sequence[str], out_dir: str | None,
                 rows: Sequence[str] = ()) -> str:
    """Write the three files; returns the Markdown.

    The paper's rows print in its order, each followed by the runs that match it (from the
    run's config, or `rows`); runs matching no row come last. A cell without a number reads
    "n/a" (blank in the CSV); a starred cell has a note below the table. Writes
    `table<N>.md` / `.csv` / `.png` (`fig4.*` for Figure 4) to `out_dir` (default
    `<first run>/report`); the chart is grouped bars, one group per column.
    """
    table = paper_table(key)
    runs = collect_runs(table, run_dirs, rows)
    out_dir = out_dir or os.path.join(run_dirs[0], "report")
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, file_stem(table))
    text = markdown(table, runs)
    with open(stem + ".md", "w") as f:
        f.write(text)
    with open(stem + ".csv", "w") as f:
        f.write(csv_text(table, runs))
    chart(table, runs, stem + ".png")
    print(text)
    name = file_stem(table)
    print(f"wrote {out_dir}/{name}.md, {name}.csv, {name}.png")
    return text

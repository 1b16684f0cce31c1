"""`lavis-ib report RUN_DIR [RUN_DIR ...] [--table 1|2|3|fig4]`: our results beside one of
the paper's tables, Table 1 (zero-shot, held-out) by default (the tables, charts and the
paper's numbers are in `lavis_ib.report`).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from lavis_ib.common.errors import ConfigError, did_you_mean
from lavis_ib.report.paper import ROW_OF_MODEL_TYPE, TABLE_1, TABLES
from lavis_ib.report.tables import _model_type, bar_chart, collect, csv_text, evaluation_folder, markdown


DESCRIPTION = ("Our runs' results beside one of the paper's tables: Table 1 (zero-shot, "
               "held-out; the default), 2 (ablations), 3 (finetuning) or fig4 (Figure 4).")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lavis-ib report", description=DESCRIPTION)
    parser.add_argument("run_dir", nargs="+",
                        help="run folder with config.yaml and eval/; several: one table "
                             "with a column per run (lavis_ib.report.runs)")
    parser.add_argument("--out", default=None, help="output folder (default RUN_DIR/report)")
    parser.add_argument("--table", default="1",
                        help=f"the paper's table to report: {', '.join(TABLES)} (default 1; "
                             f"fig4: Figure 4, instruction tuning vs. multitask learning)")
    parser.add_argument("--compare", action="append", default=None,
                        help=f"Table 1 only: paper row to compare with (default: from the "
                             f"model type; repeat it to add rows when reporting several "
                             f"runs); one of: {'; '.join(TABLE_1.row_names)}")
    parser.add_argument("--row", action="append", default=None,
                        help="--table 2|3|fig4 only: the paper row a run matches, once per "
                             "run in the runs' order (default: from each run's config.yaml)")
    args = parser.parse_args(argv)
    if args.table != "1":
        return _main_table(args)
    if args.row:
        raise ConfigError("--row names a run's row of Table 2, 3 or Figure 4 (with --table); "
                          "Table 1 takes --compare ROW.")
    if len(args.run_dir) > 1:
        return _main_runs(args)
    if args.compare and len(args.compare) > 1:
        raise ConfigError("--compare names one paper row for one run; give several run "
                          "folders to compare with several rows.")
    args.compare = args.compare[0] if args.compare else None
    args.run_dir = args.run_dir[0]
    if not os.path.isdir(args.run_dir):
        raise ConfigError(f"run folder '{args.run_dir}' does not exist.")
    args.run_dir = evaluation_folder(args.run_dir)
    model_type = _model_type(args.run_dir, args.compare)
    paper_row = args.compare or ROW_OF_MODEL_TYPE.get(model_type)   # None: ours alone
    if paper_row is not None and paper_row not in TABLE_1.row_names:
        raise ConfigError(f"--compare '{paper_row}' is not a Table 1 row."
                          f"{did_you_mean(paper_row, TABLE_1.row_names)} Rows: "
                          f"{'; '.join(TABLE_1.row_names)}.")
    rows = collect(args.run_dir, paper_row)
    out_dir = args.out or os.path.join(args.run_dir, "report")
    os.makedirs(out_dir, exist_ok=True)
    text = markdown(rows, paper_row, model_type)
    with open(os.path.join(out_dir, "table1.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out_dir, "table1.csv"), "w") as f:
        f.write(csv_text(rows))
    bar_chart(rows, paper_row, model_type, os.path.join(out_dir, "table1.png"))
    print(text)
    print(f"wrote {out_dir}/table1.md, table1.csv, table1.png")
    return 0


def _main_table(args) -> int:
    """Table 2, 3 or Figure 4 with the runs beside their rows (`lavis_ib.report.compare`)."""
    from lavis_ib.report.compare import paper_table, report_table

    table = paper_table(args.table)
    if args.compare:
        raise ConfigError(f"--compare adds a Table 1 row; every row of {table.source.item} is "
                          f"printed. Say which row a run matches with --row ROW.")
    report_table(args.table, args.run_dir, args.out, args.row or [])
    return 0


def _main_runs(args) -> int:
    """Several runs side by side with the paper's rows (`lavis_ib.report.runs`)."""
    from lavis_ib.report.runs import report_runs

    report_runs(args.run_dir, args.out, args.compare or [],
                lambda run_dir: _model_type(run_dir, (args.compare or [None])[0]), collect)
    return 0


if __name__ == "__main__":
    from lavis_ib.cli.entry import run_entry

    sys.exit(run_entry(main, None, "lavis-ib report"))

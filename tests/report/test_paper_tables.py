"""The paper's Tables 1, 2, 3 and Figure 4 as data, against numbers written out here as the
paper (arXiv 2305.06500v2) prints them, and `lavis-ib report --table 1|2|3|fig4` over fake
run folders."""
from __future__ import annotations

import csv
import json

import pytest

from lavis_ib.cli import dispatch as cli
from lavis_ib.cli.report import main
from lavis_ib.common.errors import ConfigError, DataError
from lavis_ib.report.mapping import MEASURES, Mean, Measure, find_split, match_row, value_of
from lavis_ib.report.paper import HELD_OUT, TABLE1, TABLE_1, TABLES
from lavis_ib.report.paper_types import SOURCE_NOTE

# -- the paper's numbers, written out -----------------------------------------------------------
# Table 1 rows held before the other rows were added (the audited 65 cells), HELD_OUT order.
EARLIER_ROWS = {
    "BLIP-2 FlanT5XL": [104.5, 76.1, 44.0, 60.5, 45.5, 43.1, 45.7, 53.0, 29.8, 54.9, 33.7, 16.2, 40.4],
    "InstructBLIP FlanT5XL": [119.9, 84.5, 48.4, 64.8, 50.0, 46.6, 46.6, 56.6, 32.7, 70.4, 43.4, 25.0, 53.1],
    "InstructBLIP FlanT5XXL": [120.0, 83.5, 47.9, 65.6, 51.2, 46.6, 48.5, 54.1, 30.9, 70.6, 44.3, 25.6, 53.8],
    "InstructBLIP Vicuna-7B": [123.1, 82.4, 49.2, 54.3, 43.1, 50.1, 45.2, 59.6, 34.5, 60.5, 41.8, 22.1, 52.2],
    "InstructBLIP Vicuna-13B": [121.9, 82.8, 49.5, 52.1, 44.8, 50.7, 45.4, 57.5, 33.4, 63.1, 41.2, 24.8, 51.0],
}
# (table, row, column) -> the number the paper prints (None: '-' / no number)
SPOT = {
    ("1", "Flamingo-80B", "flickr30k"): 67.2, ("1", "Flamingo-80B", "nocaps"): None,
    ("1", "Flamingo-3B", "msrvtt_qa"): 11.0, ("1", "Flamingo-9B", "hateful_memes"): 57.0,
    ("1", "BLIP-2 FlanT5XXL", "vsr"): 68.2, ("1", "BLIP-2 FlanT5XXL", "nocaps"): 98.4,
    ("1", "BLIP-2 Vicuna-7B", "nocaps"): 107.5, ("1", "BLIP-2 Vicuna-13B", "vizwiz_vqa"): 19.6,
    ("2", "InstructBLIP FlanT5XL", "heldin_avg"): 94.1,
    ("2", "FlanT5XL w/o instruction-aware visual features", "heldin_avg"): 89.8,
    ("2", "FlanT5XL w/o data balancing", "heldin_avg"): 92.6,
    ("2", "FlanT5XL w/o instruction-aware visual features", "scienceqa"): 63.4,
    ("2", "InstructBLIP Vicuna-7B", "ivqa"): 52.2,
    ("2", "Vicuna-7B w/o instruction-aware visual features", "ivqa"): 36.8,
    ("2", "Vicuna-7B w/o data balancing", "iconqa"): 43.5,
    ("3", "InstructBLIP FlanT5XXL", "scienceqa"): 90.7,   # the abstract's 90.7%
    ("3", "InstructBLIP FlanT5XXL", "aokvqa_mc_test"): 76.7,
    ("3", "BLIP-2 FlanT5XXL", "aokvqa_da_val"): 57.6,
    ("3", "InstructBLIP Vicuna-7B", "ok_vqa"): 62.1, ("3", "Previous SOTA", "ok_vqa"): 66.1,
    ("fig4", "InstructBLIP: train instruction, eval instruction", "heldout_avg"): 52.9,
    ("fig4", "InstructBLIP: train instruction, eval instruction", "heldin_avg"): 93.8,
    ("fig4", "BLIP-2 zero-shot", "heldout_avg"): 46.1,
    ("fig4", "Multitask: train dataset name, eval dataset name", "heldin_avg"): 93.7,
}
# Table 2 prints each ablation's drop beside it: FlanT5XL, GQA ScienceQA IconQA VizWiz iVQA.
T2_DROPS = {"FlanT5XL w/o instruction-aware visual features": [2.5, 7.0, 4.2, 7.6, 5.6],
            "FlanT5XL w/o data balancing": [1.6, 4.4, 0.1, 0.9, 2.0]}


def test_cell_counts_and_sources():
    counts = {k: (len(t.rows), len(t.columns), t.cells(), t.filled()) for k, t in TABLES.items()}
    assert counts == {"1": (11, 13, 143, 125), "2": (6, 6, 36, 22), "3": (5, 7, 35, 35),
                      "fig4": (5, 2, 10, 10)}
    where = {k: (t.source.version, t.source.item, t.source.pages) for k, t in TABLES.items()}
    assert where == {"1": ("arXiv:2305.06500v2", "Table 1", "6"),
                     "2": ("arXiv:2305.06500v2", "Table 2", "6-7"),
                     "3": ("arXiv:2305.06500v2", "Table 3", "9"),
                     "fig4": ("arXiv:2305.06500v2", "Figure 4", "8")}
    assert all(t.source.section.startswith("Sec. 3.") for t in TABLES.values())
    assert "'Table 4'" in SOURCE_NOTE and "v1" in SOURCE_NOTE
    # only Figure 4 is read off a figure, and all of it is
    assert {k for k, t in TABLES.items() if t.figure} == {"fig4"}
    assert all(r.from_figure == (k == "fig4") for k, t in TABLES.items() for r in t.rows)


def test_table1_earlier_cells_unchanged_and_new_rows():
    for name, values in EARLIER_ROWS.items():
        assert [TABLE1[name][d] for d in HELD_OUT] == values
        assert [TABLE_1.row(name).values[d] for d in HELD_OUT] == values
    assert sum(len(v) for v in EARLIER_ROWS.values()) == 65
    assert TABLE_1.row_names[:3] == ["Flamingo-3B", "Flamingo-9B", "Flamingo-80B"]
    # every Flamingo row is empty in the same six columns; TABLE1 holds the complete rows
    empty = {d for d in HELD_OUT if TABLE_1.row("Flamingo-3B").values[d] is None}
    assert empty == {"nocaps", "gqa", "vsr", "iconqa", "visdial", "scienceqa"}
    for name in ("Flamingo-9B", "Flamingo-80B"):
        assert {d for d in HELD_OUT if TABLE_1.row(name).values[d] is None} == empty
    assert set(TABLE1) == set(TABLE_1.row_names) - {"Flamingo-3B", "Flamingo-9B", "Flamingo-80B"}


@pytest.mark.parametrize("key", sorted(SPOT, key=str))
def test_spot_values(key):
    table, row, column = key
    assert TABLES[table].row(row).values[column] == SPOT[key]


def test_table2_rows_agree_with_the_drops_printed_beside_them():
    t2 = TABLES["2"]
    full = t2.row("InstructBLIP FlanT5XL").values
    for name, drops in T2_DROPS.items():
        row = t2.row(name).values
        got = [round(full[c] - row[c], 1) for c in ("gqa", "scienceqa", "iconqa", "vizwiz_vqa", "ivqa")]
        assert got == drops, name


def test_empty_cells_say_why():
    """An empty cell outside Flamingo's rows (whose '-' the row note explains) has a note."""
    for key, table in TABLES.items():
        for row in table.rows:
            for column, value in row.values.items():
                if value is None and not row.name.startswith("Flamingo"):
                    assert "not read" in row.notes.get(column, ""), (key, row.name, column)
    assert TABLES["3"].row("Previous SOTA").notes["ok_vqa"] == "PaLM-E (562B)"


def test_every_column_has_a_measure_and_the_averages_are_the_papers():
    for key, table in TABLES.items():
        assert set(MEASURES[key]) == {c.key for c in table.columns}, key
    heldin = [(p.dataset, p.metric) for p in MEASURES["2"]["heldin_avg"].parts]
    assert heldin == [("coco_caption", "cider"), ("ok_vqa", "acc"), ("aok_vqa", "acc"),
                      ("textcaps", "cider")]
    assert MEASURES["fig4"]["heldin_avg"] == MEASURES["2"]["heldin_avg"]
    heldout = {p.dataset: p.metric for p in MEASURES["fig4"]["heldout_avg"].parts}
    assert heldout == {"gqa": "acc", "textvqa": "acc", "vsr": "acc", "hateful_memes": "auc",
                       "iconqa": "acc", "scienceqa": "acc", "ivqa": "acc", "vizwiz_vqa": "acc"}
    assert MEASURES["3"]["aokvqa_mc_test"] == Measure("aok_vqa_mc", "acc", ("test",))


def _metrics(root, entries):
    for entry, metrics in entries.items():
        (root / entry).mkdir(parents=True)
        (root / entry / "metrics.json").write_text(json.dumps(metrics))


def test_split_finding_and_means(tmp_path):
    _metrics(tmp_path, {"aok_vqa_mc_val": {"acc": 80.0}, "aok_vqa_val": {"acc": 60.0},
                        "ok_vqa_val": {"acc": 50.0}, "gqa_val": {"acc": 1.0}, "gqa_test": {"acc": 2.0},
                        "coco_caption_val": {"cider": 130.0}, "textcaps_val": {"cider": "nan"}})
    assert find_split(str(tmp_path), "aok_vqa") == ("val", str(tmp_path / "aok_vqa_val" / "metrics.json"))
    assert find_split(str(tmp_path), "aok_vqa", ("test",)) == (None, None)   # mc_test is not it
    assert find_split(str(tmp_path), "gqa")[0] == "test"
    assert find_split(str(tmp_path), "gqa", ("val",))[0] == "val"
    three = value_of(str(tmp_path), Mean((Measure("aok_vqa", "acc"), Measure("ok_vqa", "acc"),
                                          Measure("coco_caption", "cider"))))
    assert three.value == pytest.approx((60.0 + 50.0 + 130.0) / 3) and three.missing == []
    partial = value_of(str(tmp_path), MEASURES["2"]["heldin_avg"])
    assert partial.value is None and partial.missing == ["textcaps.cider"]   # "nan" is no number
    assert value_of(str(tmp_path), Measure("aok_vqa_mc", "acc", ("val",))).value == 80.0


@pytest.mark.parametrize("table,settings,row", [
    ("2", {"arch": "instructblip", "model_type": "flant5xl"}, "InstructBLIP FlanT5XL"),
    ("2", {"arch": "instructblip", "model_type": "vicuna7b", "qformer_text_input": False},
     "Vicuna-7B w/o instruction-aware visual features"),
    ("2", {"arch": "instructblip", "model_type": "flant5xl", "balanced_sampling": False},
     "FlanT5XL w/o data balancing"),
    ("2", {"arch": "instructblip", "model_type": "flant5xl", "balanced_sampling": False,
           "qformer_text_input": False}, None),
    ("2", {"arch": "instructblip", "model_type": "flant5xxl"}, None),
    ("3", {"arch": "blip2_t5", "model_type": "pretrain_flant5xxl"}, "BLIP-2 FlanT5XXL"),
    ("3", {"arch": "instructblip", "model_type": "vicuna7b"}, "InstructBLIP Vicuna-7B"),
    ("fig4", {"arch": "blip2_t5", "model_type": "pretrain_flant5xl"}, "BLIP-2 zero-shot"),
    ("fig4", {"arch": "instructblip", "model_type": "flant5xl"},
     "InstructBLIP: train instruction, eval instruction"),
    ("1", {"arch": "instructblip", "model_type": "vicuna13b"}, "InstructBLIP Vicuna-13B"),
])
def test_rows_matched_from_the_config(table, settings, row):
    assert match_row(table, settings) == row


# -- the report -----------------------------------------------------------------------------------
def make_run(root, name, config, results):
    run = root / name
    (run / "eval").mkdir(parents=True)
    (run / "config.yaml").write_text(config)
    _metrics(run / "eval", results)
    return str(run)


HELD_IN = {"coco_caption_val": {"cider": 140.0}, "ok_vqa_val": {"acc": 60.0},
           "aok_vqa_val": {"acc": 70.0}, "textcaps_val": {"cider": 100.0}}


def test_table2_report(tmp_path, capsys):
    full = make_run(tmp_path, "full", "model:\n  arch: instructblip\n  model_type: flant5xl\n",
                    {**HELD_IN, "gqa_test": {"acc": 47.0}, "ivqa_test": {"acc": 50.0}})
    ablated = make_run(tmp_path, "noqf", "model:\n  arch: instructblip\n  model_type: flant5xl\n"
                       "  qformer_text_input: false\n", {"gqa_test": {"acc": 44.0},
                                                         "coco_caption_val": {"cider": 120.0}})
    out = tmp_path / "out"
    assert main([full, ablated, "--table", "2", "--out", str(out)]) == 0
    md = (out / "table2.md").read_text()
    assert md in capsys.readouterr().out
    lines = md.splitlines()
    assert lines[1] == "Source: arXiv:2305.06500v2, Sec. 3.2 (ablation study), Table 2, p. 6-7"
    at = lines.index("| paper: InstructBLIP FlanT5XL | 94.1 | 48.4 | 70.4 | 50.0 | 32.7 | 53.1 |")
    assert lines[at + 1] == "| ours: full (instructblip flant5xl) | 92.5 | 47.0 | n/a | n/a | n/a | 50.0 |"
    at = lines.index("| paper: FlanT5XL w/o instruction-aware visual features | 89.8 | 45.9 | 63.4 | "
                     "45.8 | 25.1 | 47.5 |")
    assert lines[at + 1] == "| ours: noqf (instructblip flant5xl) | n/a | 44.0 | n/a | n/a | n/a | n/a |"
    assert "| paper: InstructBLIP Vicuna-7B | n/a* | n/a* | n/a* | 43.1 | n/a* | 52.2 |" in lines
    assert "Held-in Avg. needs ok_vqa.acc, aok_vqa.acc, textcaps.cider (missing)" in md
    rows = list(csv.DictReader((out / "table2.csv").open()))
    assert len(rows) == (6 + 2) * 6
    held_in = [r for r in rows if r["kind"] == "run" and r["column"] == "heldin_avg"]
    assert [float(r["value"] or "nan") == 92.5 for r in held_in] == [True, False]
    assert held_in[0]["read"] == "coco_caption_val;ok_vqa_val;aok_vqa_val;textcaps_val"
    unread = [r for r in rows if r["row"] == "InstructBLIP Vicuna-7B" and r["kind"] == "paper"
              and r["column"] == "gqa"]
    assert unread[0]["value"] == "" and "not read" in unread[0]["note"]
    png = (out / "table2.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_table3_report_with_row_and_cli(tmp_path):
    run = make_run(tmp_path, "ft", "model:\n  arch: blip2_t5\n  model_type: tiny_flant5\n",
                   {"scienceqa_val": {"acc": 78.0}, "aok_vqa_val": {"acc": 63.0},
                    "aok_vqa_mc_val": {"acc": 75.0}})
    assert cli.main(["report", run, "--table", "3", "--row", "BLIP-2 Vicuna-7B"]) == 0
    md = (tmp_path / "ft" / "report" / "table3.md").read_text()
    lines = md.splitlines()
    at = lines.index("| paper: BLIP-2 Vicuna-7B | 77.3 | 69.1 | 59.3 | 60.0 | 58.7 | 72.1 | 69.0 |")
    assert lines[at + 1] == ("| ours: ft (blip2_t5 tiny_flant5) | 78.0 | n/a | n/a | 63.0 | n/a | "
                             "75.0 | n/a |")
    assert "| paper: Previous SOTA | 89.0* | 70.3* | 66.1* | 56.3* | 61.6* | 73.2* | 73.6* |" in lines
    assert "row 'BLIP-2 Vicuna-7B' (--row)" in md
    rows = list(csv.DictReader((tmp_path / "ft" / "report" / "table3.csv").open()))
    assert len(rows) == 6 * 7 and (tmp_path / "ft" / "report" / "table3.png").is_file()


def test_fig4_chart_has_the_papers_bars_and_ours(tmp_path, monkeypatch):
    """Read the figure's artists: two groups; the paper's ten hatched bars at the published
    heights; our held-out average as one solid bar, our missing held-in average as n/a."""
    from lavis_ib.report import chart as report_chart

    figures = []
    monkeypatch.setattr(report_chart, "save", lambda fig, path: figures.append(fig))
    heldout = {"gqa_test": {"acc": 40.0}, "textvqa_val": {"acc": 42.0}, "vsr_test": {"acc": 50.0},
               "hateful_memes_val": {"auc": 55.0, "acc": 99.0}, "iconqa_test": {"acc": 41.0},
               "scienceqa_test": {"acc": 52.0}, "ivqa_test": {"acc": 44.0},
               "vizwiz_vqa_val": {"acc": 28.0}}
    run = make_run(tmp_path, "mt", "model:\n  arch: blip2_t5\n  model_type: tiny_flant5\n", heldout)
    assert main([run, "--table", "fig4", "--row",
                 "Multitask: train plain input, eval instruction"]) == 0
    md = (tmp_path / "mt" / "report" / "fig4.md").read_text()
    assert "(paper values read from the figure)" in md.splitlines()[0]
    assert "| ours: mt (blip2_t5 tiny_flant5) | n/a | 44.0 |" in md   # (40+42+50+55+41+52+44+28)/8
    (ax,) = figures[0].axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Held-in Avg.", "Held-out Avg."]
    bars = [p for p in ax.patches if p.get_width() > 0]
    paper = [(round(b.get_x() + b.get_width() / 2), b.get_height()) for b in bars if b.get_hatch() == "//"]
    assert sorted(paper) == sorted([(0, 67.8), (0, 92.5), (0, 89.0), (0, 93.7), (0, 93.8),
                                    (1, 46.1), (1, 46.3), (1, 45.5), (1, 46.8), (1, 52.9)])
    ours = [(round(b.get_x() + b.get_width() / 2), b.get_height()) for b in bars if not b.get_hatch()]
    assert ours == [(1, pytest.approx(44.0))]
    missing = [t for t in ax.texts if t.get_text() == "n/a"]
    assert [round(t.get_position()[0]) for t in missing] == [0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend.index("ours: mt (blip2_t5 tiny_flant5)") == \
        legend.index("paper: Multitask: train plain input, eval instruction") + 1


def test_table1_compare_takes_the_new_rows(tmp_path):
    run = make_run(tmp_path, "run", "model:\n  arch: instructblip\n  model_type: tiny_vicuna\n",
                   {"nocaps_val": {"cider": 100.0}, "flickr30k_test": {"cider": 70.0}})
    assert main([run, "--compare", "Flamingo-80B"]) == 0
    md = (tmp_path / "run" / "report" / "table1.md").read_text()
    assert "| NoCaps | val | cider | 100.0 | - | - |" in md
    assert "| Flickr30K | test | cider | 70.0 | 67.2 | +2.8 |" in md
    rows = {r["dataset"]: r for r in csv.DictReader((tmp_path / "run" / "report" / "table1.csv").open())}
    assert rows["nocaps"]["paper"] == "" and rows["flickr30k"]["paper"] == "67.2"
    other = make_run(tmp_path, "b2", "model:\n  arch: blip2_t5\n  model_type: pretrain_flant5xxl\n",
                     {"vsr_test": {"acc": 60.0}})
    out = tmp_path / "both"
    assert main([run, other, "--compare", "Flamingo-3B", "--compare", "BLIP-2 FlanT5XXL",
                 "--out", str(out)]) == 0
    assert "| VSR | acc | - | 60.0 | - | 68.2 |" in (out / "table1_runs.md").read_text()


def test_report_table_errors(tmp_path, capsys):
    run = make_run(tmp_path, "run", "model:\n  arch: instructblip\n  model_type: flant5xl\n",
                   {"gqa_test": {"acc": 40.0}})
    with pytest.raises(ConfigError, match=r"--table 'fig5' is not one of 1, 2, 3, fig4\. Did you mean 'fig4'"):
        main([run, "--table", "fig5"])
    assert cli.main(["report", run, "--table", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lavis-ib report: error: --table '4' is not one of 1, 2, 3, fig4."]
    with pytest.raises(ConfigError, match="Did you mean 'FlanT5XL w/o data balancing'"):
        main([run, "--table", "2", "--row", "FlanT5XL w/o data balance"])
    with pytest.raises(ConfigError, match="2 --row given for 1 run"):
        main([run, "--table", "2", "--row", "InstructBLIP FlanT5XL", "--row", "InstructBLIP FlanT5XL"])
    with pytest.raises(ConfigError, match="every row of Table 3 is printed"):
        main([run, "--table", "3", "--compare", "InstructBLIP FlanT5XL"])
    with pytest.raises(ConfigError, match="Table 1 takes --compare"):
        main([run, "--row", "InstructBLIP FlanT5XL"])
    with pytest.raises(DataError, match="no results for Table 3"):
        main([run, "--table", "3"])
    with pytest.raises(ConfigError, match="does not exist"):
        main([str(tmp_path / "missing"), "--table", "2"])

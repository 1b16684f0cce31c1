"""`lavis-ib report` renders the Table-1 comparison (Markdown, CSV, PNG) from a run folder."""
import csv
import json
import os

import pytest

from lavis_ib.cli import dispatch as cli
from lavis_ib.common.errors import ConfigError, DataError
from lavis_ib.cli.report import main
from lavis_ib.report.paper import HELD_OUT, METRIC, TABLE1


def make_run(tmp_path, model_type="vicuna7b", results=None):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "config.yaml").write_text(f"model:\n  arch: instructblip\n  model_type: {model_type}\n")
    for entry, metrics in (results or {}).items():
        (run / "eval" / entry).mkdir()
        (run / "eval" / entry / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_report_table_csv_and_chart(tmp_path, capsys):
    results = {"nocaps_val": {"cider": 120.0, "bleu4": 40.0},
               "gqa_val": {"acc": 10.0}, "gqa_test": {"acc": 50.0},   # test preferred
               "hateful_memes_val": {"acc": 60.0, "auc": 61.3},
               "visdial_val": {"mrr": 40.0, "r1": 30.0},
               "msvd_qa_test": {"acc": 42.0},
               "coco_caption_val": {"cider": 130.0}}                 # held-in: not in table
    run = make_run(tmp_path, results=results)
    assert main([str(run)]) == 0
    out = run / "report"
    md = (out / "table1.md").read_text()
    paper = TABLE1["InstructBLIP Vicuna-7B"]
    assert "| NoCaps | val | cider | 120.0 | 123.1 | -3.1 |" in md
    assert "| GQA | test | acc | 50.0 | 49.2 | +0.8 |" in md
    assert "| HM | val | auc | 61.3 | 59.6 | +1.7 |" in md
    assert "| iVQA | - | acc | - | 52.2 | - |" in md
    assert "5 of 13 datasets evaluated" in md
    assert md in capsys.readouterr().out
    rows = list(csv.DictReader((out / "table1.csv").open()))
    assert [r["dataset"] for r in rows] == list(HELD_OUT)
    by = {r["dataset"]: r for r in rows}
    assert float(by["visdial"]["ours"]) == 40.0 and float(by["visdial"]["paper"]) == paper["visdial"]
    assert float(by["visdial"]["diff"]) == pytest.approx(40.0 - paper["visdial"])
    assert by["ivqa"]["ours"] == "" and by["ivqa"]["metric"] == METRIC["ivqa"]
    png = (out / "table1.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_report_through_the_cli_with_compare_and_out(tmp_path):
    run = make_run(tmp_path, model_type="tiny_flant5", results={"ivqa_test": {"acc": 1.0}})
    assert main([str(run)]) == 0   # no Table 1 row: our numbers alone, and how to compare
    md = (run / "report" / "table1.md").read_text()
    assert "| dataset | split | metric | ours |" in md and "paper" not in md.split("\n\n")[1]
    assert "| iVQA | test | acc | 1.0 |" in md and "--compare ROW" in md
    rows = list(csv.DictReader((run / "report" / "table1.csv").open()))
    assert {r["paper"] for r in rows} == {""} and {r["diff"] for r in rows} == {""}
    out = tmp_path / "elsewhere"
    assert cli.main(["report", str(run), "--compare", "InstructBLIP FlanT5XL",
                     "--out", str(out)]) == 0
    assert "| iVQA | test | acc | 1.0 | 53.1 | -52.1 |" in (out / "table1.md").read_text()
    assert os.path.isfile(out / "table1.png")


def test_report_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        main([str(tmp_path / "missing")])
    norun = tmp_path / "norun"
    (norun / "eval" / "gqa_test").mkdir(parents=True)
    (norun / "eval" / "gqa_test" / "metrics.json").write_text('{"acc": 40.0}')
    with pytest.raises(ConfigError, match="config.yaml is missing"):
        main([str(norun)])
    assert main([str(norun), "--compare", "InstructBLIP Vicuna-13B"]) == 0   # row given
    assert "| GQA | test | acc | 40.0 | 49.5 | -9.5 |" in (norun / "report" / "table1.md").read_text()
    run = make_run(tmp_path)
    with pytest.raises(DataError, match="no held-out results"):
        main([str(run)])
    with pytest.raises(ConfigError, match="Did you mean"):
        main([str(run), "--compare", "InstructBLIP Vicuna-7"])


def test_chart_tells_a_measured_zero_from_a_missing_value(tmp_path, monkeypatch):
    """Read the figure's artists (not pixels): a measured 0 is a bar labelled 0.0, a
    missing value has no bar and an "n/a" label at its place."""
    from lavis_ib.report import chart as report_chart

    figures = []
    monkeypatch.setattr(report_chart, "save", lambda fig, path: figures.append(fig))
    run = make_run(tmp_path, model_type="tiny_vicuna",
                   results={"gqa_test": {"acc": 0.0}, "msvd_qa_test": {"acc": 12.5}})
    assert main([str(run)]) == 0
    (ax,) = figures[0].axes
    ticks = [t.get_text().split("\n")[0] for t in ax.get_xticklabels()]
    assert len(ticks) == len(HELD_OUT)
    bars = [p for p in ax.patches if p.get_width() > 0]
    assert len(bars) == 2   # the two measured values only, the zero among them
    tick_of = {round(b.get_x() + b.get_width() / 2): (b.get_height()) for b in bars}
    assert tick_of == {ticks.index("GQA"): 0.0, ticks.index("MSVD QA"): 12.5}
    labels = [t.get_text() for t in ax.texts]
    assert labels.count("0.0") == 1 and labels.count("12.5") == 1
    missing = [t for t in ax.texts if t.get_text() == "n/a"]
    assert len(missing) == len(HELD_OUT) - 2
    assert {round(t.get_position()[0]) for t in missing} == \
        set(range(len(HELD_OUT))) - {ticks.index("GQA"), ticks.index("MSVD QA")}

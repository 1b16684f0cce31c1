"""`lavis-ib report` renders the Table-1 comparison (Markdown, CSV, PNG) from a run folder."""
import csv
import json
import os

import pytest

from lavis_ib import cli
from lavis_ib.common.errors import ConfigError, DataError
from lavis_ib.report import main
from lavis_ib.paper_results import HELD_OUT, METRIC, TABLE1


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
    with pytest.raises(ConfigError, match="--compare"):
        main([str(run)])
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

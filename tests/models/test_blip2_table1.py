"""Table 1 side by side: the BLIP-2 zero-shot projects evaluate the 13 held-out datasets
exactly as InstructBLIP's projects do; the paper's BLIP-2 row is in the results data; and
`lavis-ib report RUN RUN ...` puts several runs and the paper's rows in one table/chart."""
from __future__ import annotations

import csv
import json
import os

import pytest
from omegaconf import OmegaConf

from lavis_ib.common.config import Config
from lavis_ib.common.errors import ConfigError
from lavis_ib.common.paths import package_path
from lavis_ib.report.paper import HELD_OUT, ROW_OF_MODEL_TYPE, TABLE1
from lavis_ib.cli.report import main

# The paper's BLIP-2 FlanT5XL zero-shot row (Table 1), in HELD_OUT order, written out here.
BLIP2_FLANT5XL = [104.5, 76.1, 44.0, 60.5, 45.5, 43.1, 45.7, 53.0, 29.8, 54.9, 33.7, 16.2, 40.4]


@pytest.mark.parametrize("size", ["flant5xl", "flant5xxl"])
def test_blip2_zeroshot_projects_match_instructblip_settings(size):
    ours = Config(package_path(f"configs/projects/blip2/zeroshot_heldout_blip2_{size}.yaml"))
    ref = Config(package_path(f"configs/projects/instructblip/zeroshot_heldout_{size}.yaml"))
    assert (ours.model_cfg.arch, ours.model_cfg.model_type) == ("blip2_t5", f"pretrain_{size}")
    assert list(ours.datasets_cfg.keys()) == list(HELD_OUT)
    # the same entries, InstructBLIP's repetition penalty (its model default) written out
    # where a dataset generates (tests/models/test_blip2_lavis_defaults.py)
    want = OmegaConf.to_container(ref.datasets_cfg)
    for entry in want.values():
        if entry["inference"] == "generate":
            entry["generate"] = {**entry["generate"], "repetition_penalty": 1.5}
    assert OmegaConf.to_container(ours.datasets_cfg) == want
    run, ref_run = (OmegaConf.to_container(c.run_cfg) for c in (ours, ref))
    assert run.pop("output_dir") == f"output/zeroshot_heldout_blip2_{size}"
    ref_run.pop("output_dir")
    assert run == ref_run and run["evaluate_only"]


def test_paper_blip2_row():
    assert [TABLE1["BLIP-2 FlanT5XL"][d] for d in HELD_OUT] == BLIP2_FLANT5XL
    assert ROW_OF_MODEL_TYPE["pretrain_flant5xl"] == "BLIP-2 FlanT5XL"
    assert all(row.startswith(("BLIP-2 ", "InstructBLIP ")) for row in TABLE1)


def _run(root, name, arch, model_type, results):
    run = root / name
    (run / "eval").mkdir(parents=True)
    (run / "config.yaml").write_text(f"model:\n  arch: {arch}\n  model_type: {model_type}\n")
    for entry, metrics in results.items():
        (run / "eval" / entry).mkdir()
        (run / "eval" / entry / "metrics.json").write_text(json.dumps(metrics))
    return str(run)


def test_report_puts_several_runs_and_the_paper_rows_in_one_table(tmp_path, capsys):
    ib = _run(tmp_path, "ib_xl", "instructblip", "flant5xl",
              {"gqa_test": {"acc": 48.0}, "vsr_test": {"acc": 64.0}})
    b2 = _run(tmp_path, "b2_xl", "blip2_t5", "pretrain_flant5xl",
              {"gqa_test": {"acc": 44.5}, "nocaps_val": {"cider": 100.0}})
    out = tmp_path / "side_by_side"
    assert main([ib, b2, "--out", str(out)]) == 0
    md = (out / "table1_runs.md").read_text()
    assert ("| dataset | metric | ib_xl (instructblip flant5xl) | b2_xl (blip2_t5 pretrain_flant5xl) | "
            "paper: InstructBLIP FlanT5XL | paper: BLIP-2 FlanT5XL |") in md
    assert "| GQA | acc | 48.0 | 44.5 | 48.4 | 44.0 |" in md
    assert "| NoCaps | cider | - | 100.0 | 119.9 | 104.5 |" in md
    assert "| VSR | acc | 64.0 | - | 64.8 | 60.5 |" in md
    assert "b2_xl (blip2_t5 pretrain_flant5xl): 2 of 13 datasets evaluated" in md
    assert md in capsys.readouterr().out
    rows = list(csv.DictReader((out / "table1_runs.csv").open()))
    assert len(rows) == 4 * len(HELD_OUT)
    gqa = {r["source"]: r for r in rows if r["dataset"] == "gqa"}
    assert float(gqa["b2_xl (blip2_t5 pretrain_flant5xl)"]["value"]) == 44.5
    assert gqa["b2_xl (blip2_t5 pretrain_flant5xl)"]["split"] == "test"
    assert float(gqa["BLIP-2 FlanT5XL"]["value"]) == 44.0
    png = (out / "table1_runs.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_report_of_runs_without_a_row_and_errors(tmp_path):
    tiny = _run(tmp_path, "tiny_ib", "instructblip", "tiny_flant5", {"gqa_test": {"acc": 1.0}})
    tiny2 = _run(tmp_path, "tiny_b2", "blip2_t5", "tiny_flant5", {"gqa_test": {"acc": 2.0}})
    assert main([tiny, tiny2]) == 0   # no row: the runs alone, default folder: the first run's
    md = open(os.path.join(tiny, "report", "table1_runs.md")).read()
    assert "| GQA | acc | 1.0 | 2.0 |" in md and "--compare" in md
    assert main([tiny, tiny2, "--compare", "BLIP-2 FlanT5XL"]) == 0
    assert "| GQA | acc | 1.0 | 2.0 | 44.0 |" in open(
        os.path.join(tiny, "report", "table1_runs.md")).read()
    with pytest.raises(ConfigError, match="Did you mean"):
        main([tiny, tiny2, "--compare", "BLIP-2 FlanT5X"])
    with pytest.raises(ConfigError, match="does not exist"):
        main([tiny, str(tmp_path / "missing")])


def test_blip2_demo_heldout_project_is_instructblips_with_blip2():
    ours = Config(package_path("configs/projects/blip2/demo_tiny_heldout_blip2.yaml"))
    ref = Config(package_path("configs/projects/instructblip/demo_tiny_heldout.yaml"))
    assert (ours.model_cfg.arch, ours.model_cfg.model_type) == ("blip2_t5", "tiny_flant5")
    assert OmegaConf.to_container(ours.datasets_cfg) == OmegaConf.to_container(ref.datasets_cfg)
    assert ours.run_cfg.output_dir == "output/demo_tiny_heldout_blip2"

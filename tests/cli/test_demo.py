"""`make demo` runs any number of times and reads well: the demo pipeline (fixtures,
training, held-out evaluation of the tuned model and of the baseline, reports), cut down
to one dataset per stage and two steps, run twice in the same folder."""
import glob
import os
import re

import pytest
import yaml

from lavis_ib.common.paths import package_path

PROJECTS = package_path("configs/projects/instructblip")


def _small_projects(folder):
    """The demo's projects with one dataset each (VQA: no Java metrics) and two steps."""
    train = yaml.safe_load(open(os.path.join(PROJECTS, "demo_tiny.yaml")))
    train["datasets"] = {"ok_vqa": train["datasets"]["ok_vqa"]}
    train["run"].update(max_iters=2, val_every=0, save_every=0, warmup_steps=1,
                        select_metric=["ok_vqa.acc"], log_every=1)
    heldout = yaml.safe_load(open(os.path.join(PROJECTS, "demo_tiny_heldout.yaml")))
    heldout["datasets"] = {"gqa": heldout["datasets"]["gqa"]}
    baseline = {"includes": ["heldout.yaml"], "model": {"arch": "blip2_t5", "model_type": "tiny_flant5"},
                "run": {"output_dir": "output/demo_tiny_heldout_blip2"}}
    paths = []
    for name, project in (("train", train), ("heldout", heldout), ("baseline", baseline)):
        paths.append(str(folder / f"{name}.yaml"))
        yaml.safe_dump(project, open(paths[-1], "w"))
    return paths


def _tables(out):
    return [line for line in out.splitlines() if line.startswith("| ")]


@pytest.mark.integration
def test_the_demo_runs_twice_and_reports_the_same(tmp_path, monkeypatch, capfd):
    from lavis_ib.cli import demo

    monkeypatch.chdir(tmp_path)          # the demo writes under ./output
    monkeypatch.delenv("LAVIS_IB_NO_PROGRESS", raising=False)
    train, heldout, baseline = _small_projects(tmp_path)
    argv = ["--cfg-path", train, "--heldout-cfg-path", heldout, "--baseline-cfg-path", baseline,
            "--data-root", str(tmp_path / "data")]
    assert demo.main(argv) == 0
    first = capfd.readouterr()
    assert demo.main(argv) == 0
    second = capfd.readouterr()
    assert _tables(first.out) == _tables(second.out) and "| GQA | test | acc |" in first.out
    assert len(glob.glob("output/demo_tiny.old-*")) == 1   # the first run, moved aside
    for run in (first, second):
        console = run.out + run.err
        assert "gqa/test" in run.err                       # the held-out progress bar
        assert re.search(r"^  gqa: acc \d+\.\d\d \(3 samples", run.out, re.M)  # rounded
        for noise in ("_pytree.py", "PTBTokenizer", "font cache"):
            assert noise not in console
        # each model's metrics block is headed by the model it belongs to
        blocks = re.findall(r"^metrics of (\S+)[^\n]*:\n((?:  .*\n)+)", run.out, re.M)
        assert [model for model, _ in blocks] == ["instructblip:tiny_vicuna",
                                                  "blip2_t5:tiny_flant5"], run.out
        assert all(re.search(r"^  gqa: acc ", lines, re.M) for _, lines in blocks)
        # every step says what it does before it starts, scoring a split included
        steps = [line for line in run.out.splitlines() if line.startswith("--- ")]
        assert [s.split(" ")[1] for s in steps] == ["building", "InstructBLIP", "the", "InstructBLIP"]
        assert run.out.index("--- the baseline, BLIP-2 blip2_t5:tiny_flant5") \
            < run.out.index("metrics of blip2_t5:tiny_flant5")
        assert run.err.count("gqa/test: scoring 3 predictions") == 2
    for name in ("table1.md", "table1.png", "table1_runs.md", "table1_runs.png"):
        assert os.path.isfile(os.path.join("output/demo_tiny_heldout/report", name))

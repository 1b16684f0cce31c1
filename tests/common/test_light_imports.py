"""`lavis-ib check` stays light: after a config error and after a successful check of a
real project, none of torchvision, timm, transformers or gradio has been imported (each
costs seconds; the check only looks classes up by name and reads their settings), and a
project file that is not YAML stops before torch itself. Each case runs in a fresh
interpreter, where `sys.modules` shows exactly what the check imported."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEAVY = ("torchvision", "timm", "transformers", "gradio")
CHILD = """
import json, sys
from lavis_ib.cli import main
rc = main(["check", *sys.argv[1:]])
print(json.dumps({"rc": rc, "imported": sorted(m for m in (*%r, "torch") if m in sys.modules)}))
""" % (HEAVY,)

pytestmark = pytest.mark.integration   # a fresh interpreter per case


def _check(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": REPO, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True,
                          text=True, timeout=180, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "stderr": proc.stderr}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from lavis_ib.testing.fixtures import write_fixtures

    root = tmp_path_factory.mktemp("light")
    fixtures = write_fixtures(str(root), ["ok_vqa"])
    body = {"model": {"arch": "instructblip", "model_type": "tiny_vicuna"},
            "datasets": {"ok_vqa": fixtures["ok_vqa"]},
            "run": {"output_dir": str(root / "out"), "select_metric": ["ok_vqa.acc"]}}
    path = root / "project.yaml"
    path.write_text(yaml.safe_dump(body))
    return str(path)


@pytest.mark.integration
def test_a_successful_check_imports_no_heavy_library(project):
    got = _check(project)
    assert got["rc"] == 0, got["stderr"]
    assert [m for m in got["imported"] if m in HEAVY] == []


@pytest.mark.integration
def test_a_config_error_imports_no_heavy_library(project):
    got = _check(project, "--options", "run.max_iter=5",
                 "datasets.ok_vqa.vis_processor.eval.name=blip_image_evl")
    assert got["rc"] == 2
    assert "max_iters" in got["stderr"] and "blip_image_eval" in got["stderr"]
    assert [m for m in got["imported"] if m in HEAVY] == []


@pytest.mark.integration
def test_a_file_that_is_not_yaml_stops_before_torch(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model: {arch: instructblip\n")
    got = _check(str(path))
    assert got["rc"] == 2 and "not valid YAML" in got["stderr"]
    assert got["imported"] == []

"""End to end: `python -m lavis_ib.evaluate` on fixture copies of the held-out datasets,
covering every evaluation task, with tiny_vicuna and tiny_flant5, in one process and in a
2-process torchrun (ddp, gloo; batches grouped by prompt length, the default): identical
metrics and predictions, every sample scored exactly once, and `lavis-ib report` renders
the run."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# one dataset or more per task: captioning, gqa, classification (2), multiple_choice,
# vqa, dialog, video_qa (ranking the answer vocabulary, and iVQA generation)
DATASETS = {"flickr30k": "test", "gqa": "test", "vsr": "test", "hateful_memes": "val",
            "scienceqa": "test", "textvqa": "val", "visdial": "val", "msvd_qa": "test",
            "ivqa": "test"}
VIDEO = {"msvd_qa", "ivqa"}
SHORT = {"num_beams": 2, "max_length": 4, "min_length": 1}
# METEOR's Java start-up costs seconds per run: one model type runs it, the other not
CAPTION_METRIC = {"tiny_vicuna": "coco", "tiny_flant5": "bleu_cider", "tiny_opt": "bleu_cider"}


@pytest.fixture(scope="module")
def project(tmp_path_factory, fixture_root):
    root = tmp_path_factory.mktemp("e2e")
    fixtures = fixture_root.overrides
    datasets = {}
    for name, split in DATASETS.items():
        entry = dict(fixtures[name], eval_splits=[split])
        proc = {"name": "video_eval", "image_size": 32, "n_frms": 2} if name in VIDEO else \
            {"name": "blip_image_eval", "image_size": 32}
        entry["vis_processor"] = {"eval": proc}
        if name == "flickr30k":
            entry["metric"] = "coco"
        if name in ("flickr30k", "gqa", "textvqa", "ivqa"):
            entry["generate"] = dict(SHORT, min_length=2 if name == "flickr30k" else 1)
        datasets[name] = entry
    path = root / "project.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"arch": "instructblip", "model_type": "tiny_vicuna"},
        "datasets": datasets,
        "run": {"task": "instruction_tuning", "evaluate_only": True, "batch_size_eval": 4,
                "num_workers": 0, "amp": "none", "distributed": "none", "device": "cpu",
                "seed": 0, "dist_timeout_s": 120, "output_dir": str(root / "unused")}}))
    return root, str(path)


def evaluate(cfg_path, out_dir, model_type, nproc, options=()):
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(nproc), "-m", "lavis_ib.cli.evaluate"]
    else:
        cmd = [sys.executable, "-m", "lavis_ib.cli.evaluate"]
    cmd += ["--cfg-path", cfg_path, "--options", f"model.model_type={model_type}",
            f"run.output_dir={out_dir}", f"run.distributed={'ddp' if nproc > 1 else 'none'}",
            f"datasets.flickr30k.metric={CAPTION_METRIC[model_type]}", *options]
    env = {**os.environ, "PYTHONPATH": REPO, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "LAVIS_IB_NO_PROGRESS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # batches grouped by prompt length (the default), in 1 and in 2 processes alike
    assert re.search(r"visdial/val: \d+ batches grouped by prompt length", proc.stderr)
    # third-party noise stays out of the console: torchao's Enum warnings (torch pytree,
    # on importing transformers' modeling code) and the Java PTB tokenizer's speed lines
    for noise in ("torch/utils/_pytree.py", "is an Enum subclass", "PTBTokenizer tokenized"):
        assert noise not in proc.stderr + proc.stdout, noise
    # the summary prints rounded: "  gqa: acc 0.00 (3 samples, 0 truncated)"
    assert re.search(r"^  gqa: acc \d+\.\d\d \(\d+ samples", proc.stdout, re.M), proc.stdout
    results = {}
    for name, split in DATASETS.items():
        folder = os.path.join(out_dir, "eval", f"{name}_{split}")
        with open(os.path.join(folder, "metrics.json")) as f:
            metrics = json.load(f)
        with open(os.path.join(folder, "predictions.jsonl")) as f:
            records = [json.loads(line) for line in f]
        results[name] = (metrics, records)
    return results


def dataset_ids(root, name, split):
    """The sample ids of a fixture split, read through its builder (the ground truth)."""
    from lavis_ib import registry
    from lavis_ib.common.config import Config

    cfg = Config(str(root / "project.yaml")).datasets_cfg[name]
    ds = registry.get_builder_class(name)(cfg).build_datasets()[split]
    return [ds[i].get("question_id", ds[i].get("instance_id")) for i in range(len(ds))]


@pytest.mark.integration
@pytest.mark.parametrize("model_type", ["tiny_vicuna", "tiny_flant5"])
def test_evaluate_one_and_two_processes_agree(project, model_type, tmp_path):
    root, cfg_path = project
    one = evaluate(cfg_path, str(tmp_path / "one"), model_type, nproc=1)
    two = evaluate(cfg_path, str(tmp_path / "two"), model_type, nproc=2)
    caption_keys = {"bleu4", "cider"} | ({"meteor"} if model_type == "tiny_vicuna" else set())
    expected_keys = {"flickr30k": caption_keys, "gqa": {"acc"},
                     "vsr": {"acc", "auc"}, "hateful_memes": {"acc"}, "scienceqa": {"acc"},
                     "textvqa": {"acc"}, "visdial": {"mrr", "r1", "r5", "r10", "mean_rank"},
                     "msvd_qa": {"acc"}, "ivqa": {"acc"}}
    for name, split in DATASETS.items():
        (m1, r1), (m2, r2) = one[name], two[name]
        ids = dataset_ids(root, name, split)
        # every sample scored exactly once, in both runs
        assert sorted(map(str, (r["id"] for r in r1))) == sorted(map(str, ids)), name
        assert len({json.dumps(r["id"]) for r in r2}) == len(r2) == len(ids), name
        assert m1["num_samples"] == m2["num_samples"] == len(ids)
        assert expected_keys[name] <= set(m1), (name, m1)
        assert m1.keys() == m2.keys()
        for key in m1:
            assert m1[key] == pytest.approx(m2[key], abs=1e-6), (name, key)
        # the same predictions, not only the same aggregate
        strip = [{k: v for k, v in r.items() if k != "prob"} for r in r1]
        assert strip == [{k: v for k, v in r.items() if k != "prob"} for r in r2], name

    from lavis_ib.cli.report import main as report

    assert report([str(tmp_path / "one"), "--compare", "InstructBLIP Vicuna-7B"]) == 0
    table = (tmp_path / "one" / "report" / "table1.md").read_text()
    assert "| Visdial | val | mrr |" in table and "9 of 13 datasets evaluated" in table
    # a tiny model type has no Table 1 row: the report needs no --compare (our numbers alone)
    assert report([str(tmp_path / "one"), "--out", str(tmp_path / "ours")]) == 0
    ours = (tmp_path / "ours" / "table1.md").read_text()
    gqa = json.load(open(tmp_path / "one" / "eval" / "gqa_test" / "metrics.json"))["acc"]
    assert f"| GQA | test | acc | {gqa:.1f} |" in ours and "--compare ROW" in ours


@pytest.mark.integration
def test_a_new_llm_family_evaluates_every_task(project, tmp_path):
    """InstructBLIP with an OPT LLM (family "opt") runs every task with no code naming it:
    per-family values resolve by the model's declared family, and a mapping without that
    family is one clear error before any sample is scored."""
    root, cfg_path = project
    per_family = "+datasets.gqa.generate.length_penalty={vicuna: 0, flant5: -1, opt: 0}"
    results = evaluate(cfg_path, str(tmp_path / "opt"), "tiny_opt", nproc=1,
                       options=[per_family])
    for name, split in DATASETS.items():
        metrics, records = results[name]
        assert metrics["num_samples"] == len(records) == len(dataset_ids(root, name, split))
    from lavis_ib import registry
    from lavis_ib.common.config import Config
    from lavis_ib.common.errors import ConfigError

    cfg = Config(cfg_path, ["model.model_type=tiny_opt",
                            "+datasets.gqa.generate.length_penalty={vicuna: 0, flant5: -1}"])
    task = registry.get_task_class("gqa").for_dataset("gqa", cfg.datasets_cfg.gqa)
    with pytest.raises(ConfigError, match="gqa.generate.length_penalty.*'opt'"):
        task.eval_settings.generate_kwargs("opt")

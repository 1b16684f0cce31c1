"""Helpers of the runner tests: toy projects, launching runs, reading their losses.

A plain module (not conftest) so that test files import it by a unique name.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

BASE_RUN = {
    "max_iters": 6, "val_every": 3, "save_every": 2, "keep_last": 5,
    "global_batch_size": 8, "batch_size_train": 4, "batch_size_eval": 3,
    "init_lr": 0.05, "min_lr": 0.001, "warmup_lr": 0.001, "warmup_steps": 2,
    "amp": "none", "distributed": "none", "num_workers": 0, "seed": 3, "device": "cpu",
    "select_metric": ["toy_a.acc", "toy_b.acc"], "log_every": 1, "grad_clip": 1.0,
    "dist_timeout_s": 60,
}


def write_project(folder, model=None, datasets=None, **run) -> str:
    """A toy project YAML in `folder`; `run` overrides BASE_RUN (output_dir: folder/run)."""
    os.makedirs(folder, exist_ok=True)
    project = {
        "plugins": ["runner_toys"],
        "model": {"arch": "toy_ib", "model_type": "default", **(model or {})},
        "datasets": datasets or {"toy_a": {}, "toy_b": {"sample_ratio": 2.0}},
        "run": {**BASE_RUN, "output_dir": os.path.join(str(folder), "run"), **run},
    }
    path = os.path.join(str(folder), "project.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(project, f)
    return path


def launch(cfg_path: str, options=(), nproc: int = 1, env=None, timeout: float = 90,
           module: str = "lavis_ib.cli.train") -> subprocess.CompletedProcess:
    """Run an entry point in a subprocess (under torchrun when nproc > 1)."""
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(nproc), "-m", module]
    else:
        cmd = [sys.executable, "-m", module]
    cmd += ["--cfg-path", cfg_path]
    if options:
        cmd += ["--options", *options]
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([HERE, REPO]),
                "LAVIS_IB_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1",
                "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def losses(output_dir: str) -> dict[int, float]:
    """{step: loss} from a run's log.jsonl (the last record of a step wins: a resumed
    run repeats the steps after its checkpoint)."""
    out = {}
    with open(os.path.join(output_dir, "log.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            if record["type"] == "train":
                out[record["step"]] = record["loss"]
    return out


LORA = {"r": 4, "alpha": 8, "dropout": 0.0}
IMAGES = {"train": {"name": "blip_image_eval", "image_size": 32},
          "eval": {"name": "blip_image_eval", "image_size": 32}}


def lora_okvqa_project(folder, data: str, model=None, **run) -> str:
    """A 4-step LoRA project on OK-VQA (no dropout anywhere: ranks see equal inputs)."""
    files = {split: {"storage": [f"ok_vqa/OpenEnded_mscoco_{split}2014_questions.json",
                                 f"ok_vqa/mscoco_{split}2014_annotations.json"]}
             for split in ("train", "val")}
    project = {
        "model": {"arch": "instructblip", "model_type": "tiny_vicuna", "llm_lora": LORA,
                  "qformer": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
                  **(model or {})},
        "datasets": {"ok_vqa": {
            "cache_root": data, "vis_processor": IMAGES, "eval_splits": [],
            "build_info": {"annotations": files,
                           "images": {"storage": "ok_vqa/images"}}}},
        "run": {"task": "instruction_tuning", "max_iters": 4, "val_every": 0, "save_every": 2,
                "keep_last": 5, "global_batch_size": 4, "batch_size_train": 2,
                "init_lr": 1e-2, "warmup_steps": 1, "amp": "none", "distributed": "none",
                "device": "cpu", "num_workers": 0, "seed": 7, "log_every": 1,
                "dist_timeout_s": 60, "output_dir": os.path.join(str(folder), "run"), **run},
    }
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(str(folder), "project.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(project, f)
    return path

"""The whole pipeline as shipped: `pretrain_stage1.yaml` follows the BLIP-2 paper's stage-1
recipe and passes the pre-flight once its data exist; the tiny chain of
`configs/projects/blip2/demo_tiny_pipeline_*.yaml` runs end to end on fixture data
(stage 1 -> export -> stage 2 -> export -> InstructBLIP -> held-out evaluation), every
stage killed after a step (LAVIS_IB_FAULT_AFTER_STEP) and resumed to the weights and
losses of an uninterrupted run, InstructBLIP starting with every trainable parameter
filled from the stage-2 export.
"""
from __future__ import annotations

import contextlib
import json
import os

import pytest
import torch

from lavis_ib.common.paths import package_path
from lavis_ib.runners.checkpointing.faults import FAULT_EXIT_CODE
from tests.runners.runner_helpers import launch

PROJECTS = package_path("configs/projects/blip2")
STAGE1 = os.path.join(PROJECTS, "pretrain_stage1.yaml")
DEMO = {stage: os.path.join(PROJECTS, f"demo_tiny_pipeline_{stage}.yaml")
        for stage in ("stage1", "stage2", "instruct", "heldout")}
PARTS = ("loss", "loss_itc", "loss_itm", "loss_lm")


# -- pretrain_stage1.yaml -----------------------------------------------------------------
def _config(path: str, options=()):
    from lavis_ib.common.config import Config

    return Config(path, list(options))


def test_stage1_project_follows_the_paper():
    """BLIP-2 Sec. 3.4, ViT-g: 250k steps, batch 1680, AdamW beta2 0.98, weight decay 0.05,
    cosine from a 1e-4 peak after 2k warm-up steps; from BERT-base and EVA's ViT; COCO, VG
    and the web shards with image ids; validated by COCO retrieval, never trained on it."""
    from lavis_ib.runners.batching import derive_batching

    cfg = _config(STAGE1)
    run, model, data = cfg.run_cfg, cfg.model_cfg, cfg.datasets_cfg
    assert (run.max_iters, run.global_batch_size, run.beta2, run.weight_decay, run.init_lr,
            run.warmup_steps, run.lr_sched) == (
        250000, 1680, 0.98, 0.05, 1e-4, 2000, "linear_warmup_cosine_lr")
    assert derive_batching(run, 16)[0] == derive_batching(run, 8)[0] == 1680
    assert (model.arch, model.model_type, model.pretrained) == ("blip2", "pretrain", None)
    assert model.vit_weights.endswith("eva_vit_g.pth") and "bert-base-uncased" in model.bert_weights
    assert model.itc_gather == "autograd" and model.freeze_vit
    trained = [n for n, e in data.items() if e.get("sample_ratio", 1.0) > 0]
    assert sorted(trained) == ["capfilt14m", "coco_caption", "vg_caption"]
    assert all(data[n].image_ids for n in trained)
    assert data.coco_retrieval.sample_ratio == 0 and list(data.coco_retrieval.eval_splits) == ["val"]
    assert list(run.select_metric) == ["coco_retrieval.txt_r_mean"] and not run.balanced_sampling


def _point_at(fixtures) -> list[str]:
    """Options that point the stage-1 project's datasets at fixture copies."""
    out = []
    for name in ("coco_caption", "vg_caption", "capfilt14m", "coco_retrieval"):
        info = fixtures.overrides[name]["build_info"]
        for split, node in info["annotations"].items():
            out.append(f"datasets.{name}.build_info.annotations.{split}.storage={node['storage']}")
        if "images" in info:
            out.append(f"datasets.{name}.build_info.images.storage={info['images']['storage']}")
    return out


def test_stage1_project_passes_the_preflight_but_for_missing_data(fixture_root, tmp_path):
    from lavis_ib.cli.preflight import checked_config
    from lavis_ib.common.errors import ConfigError

    out = f"run.output_dir={tmp_path / 'run'}"
    with pytest.raises(ConfigError) as missing:
        checked_config(STAGE1, [out, "datasets.coco_caption.cache_root=" + str(tmp_path),
                                "datasets.vg_caption.cache_root=" + str(tmp_path),
                                "datasets.capfilt14m.cache_root=" + str(tmp_path),
                                "datasets.coco_retrieval.cache_root=" + str(tmp_path)])
    problems = [line for line in str(missing.value).splitlines() if line.startswith("  - ")]
    assert problems and all("does not exist" in p for p in problems), problems
    cfg = checked_config(STAGE1, [out, *_point_at(fixture_root)])   # data present: no problem
    assert cfg.model_cfg.arch == "blip2"


def test_demo_chain_keeps_one_llm_and_reads_each_export():
    """Steps 3 and 4 build InstructBLIP on stage 2's LLM (blip2_llm tiny_vicuna's
    architecture and tokenizer); each stage starts from the folder the step before exports."""
    from lavis_ib.common.containers import to_plain
    from lavis_ib.report.zoo import model_yaml

    stage2_llm = model_yaml("blip2_llm", "tiny_vicuna").model
    stage2 = _config(DEMO["stage2"]).model_cfg
    assert list(stage2.init_from) == ["output/demo_tiny_pipeline_stage1_hf"]
    for step in ("instruct", "heldout"):
        model = _config(DEMO[step]).model_cfg
        assert to_plain(model.llm_config) == to_plain(stage2_llm.llm_config), step
        assert model.llm_tokenizer == stage2_llm.llm_tokenizer, step
    instruct = _config(DEMO["instruct"]).model_cfg
    assert list(instruct.init_from) == ["output/demo_tiny_pipeline_stage2_hf"]
    assert not instruct.allow_random_init and not stage2.allow_random_init
    with open(DEMO["stage1"]) as f:   # the commands the first file gives write those folders
        text = f.read()
    for stage in ("stage1", "stage2"):
        assert (f"lavis-ib export output/demo_tiny_pipeline_{stage} "
                f"output/demo_tiny_pipeline_{stage}_hf") in text


# -- the tiny chain ----------------------------------------------------------------------
def records(run_dir: str) -> dict[int, dict]:
    """{step: the losses of the step's last train record} of a run's log.jsonl."""
    out = {}
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        for record in map(json.loads, f):
            if record["type"] == "train":
                out[record["step"]] = {k: record[k] for k in PARTS if k in record}
    return out


def weights(run_dir: str, step: int, scratch: str) -> dict[str, torch.Tensor]:
    """The trainable weights a run's checkpoint of `step` holds."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    target = os.path.join(scratch, f"{os.path.basename(run_dir)}_{step}.pt")
    dcp_to_torch_save(os.path.join(run_dir, "checkpoints", f"step_{step:08d}", "model"), target)
    return torch.load(target, weights_only=True)


@contextlib.contextmanager
def spying_on_the_build():
    """The model an in-process `lavis-ib train` builds, with its weights at the start."""
    import lavis_ib.cli.train as train_cli

    seen: dict = {}
    real = train_cli.build

    def build(cfg, info):
        task, model, datasets, runner = real(cfg, info)
        seen["model"] = model
        seen["start"] = {n: p.detach().clone() for n, p in model.named_parameters()}
        return task, model, datasets, runner

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_cli, "build", build)
        yield seen


def train(project: str, options: list[str]) -> dict:
    from lavis_ib.cli import train as train_cli

    with spying_on_the_build() as seen:
        assert train_cli.main(["--cfg-path", project, "--options", *options]) == 0
    return seen


def stage(name: str, root: str, data: str, options: list[str]) -> dict:
    """One stage three ways: uninterrupted (in this process), killed after step 3 in a
    process of its own (checkpoints at 2 and 4), resumed here."""
    reference, run = os.path.join(root, f"{name}_reference"), os.path.join(root, name)
    built = train(DEMO[name], [*options, f"run.output_dir={reference}"])
    killed = launch(DEMO[name], [*options, f"run.output_dir={run}"], timeout=240,
                    env={"LAVIS_IB_DEMO_DATA": data, "LAVIS_IB_FAULT_AFTER_STEP": "3"})
    assert killed.returncode == FAULT_EXIT_CODE, killed.stderr[-3000:]
    assert sorted(records(run)) == [1, 2, 3]
    assert sorted(os.listdir(os.path.join(run, "checkpoints"))) == ["step_00000002"]
    train(DEMO[name], [*options, f"run.output_dir={run}"])
    return {"run": run, "reference": reference, "built": built}


@pytest.fixture(scope="module")
def chain(fixture_root, tmp_path_factory):
    from lavis_ib.cli import evaluate as evaluate_cli
    from lavis_ib.cli import export as export_cli

    root = str(tmp_path_factory.mktemp("pipeline"))
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAVIS_IB_DEMO_DATA", fixture_root.path)
        mp.setenv("LAVIS_IB_NO_PROGRESS", "1")
        previous = []
        for name in ("stage1", "stage2", "instruct"):
            init = [f"model.init_from=[{previous[-1]}]"] if previous else []
            out[name] = stage(name, root, fixture_root.path, init)
            if name != "instruct":
                export = os.path.join(root, f"{name}_hf")
                assert export_cli.main([out[name]["run"], export]) == 0
                previous.append(export)
        heldout = os.path.join(root, "heldout")
        assert evaluate_cli.main(["--cfg-path", DEMO["heldout"], "--checkpoint", out["instruct"]["run"],
                                  "--options", f"run.output_dir={heldout}"]) == 0
    out.update(root=root, exports=previous, heldout=heldout)
    return out


pipeline = pytest.mark.integration


@pipeline
@pytest.mark.parametrize("name", ["stage1", "stage2", "instruct"])
def test_each_stage_resumes_to_the_uninterrupted_run(chain, name):
    run, reference = chain[name]["run"], chain[name]["reference"]
    assert records(run) == records(reference)
    assert sorted(records(run)) == [1, 2, 3, 4]
    got, want = weights(run, 4, chain["root"]), weights(reference, 4, chain["root"])
    assert got.keys() == want.keys() and got
    for key, value in want.items():
        assert torch.equal(got[key], value), (name, key)


@pipeline
def test_stage1_trains_its_three_losses_and_is_validated_by_retrieval(chain):
    steps = records(chain["stage1"]["run"])
    for parts in steps.values():
        assert parts["loss"] == pytest.approx(parts["loss_itc"] + parts["loss_itm"] + parts["loss_lm"],
                                              rel=1e-6)
    with open(os.path.join(chain["stage1"]["run"], "eval", "step_00000004", "coco_retrieval_val",
                           "metrics.json")) as f:
        metrics = json.load(f)
    assert {"txt_r1", "img_r1", "r_mean"} <= set(metrics)


@pipeline
def test_stage2_starts_from_stage1_with_only_the_projection_new(chain):
    report = chain["stage2"]["built"]["model"].init_report
    assert report["unfilled"] == [] and report["new_in_stage2"] == ["llm_proj.weight", "llm_proj.bias"]
    stage1 = weights(chain["stage1"]["run"], 4, chain["root"])
    start = chain["stage2"]["built"]["start"]
    for name in ("query_tokens", "qformer.word_embeddings.weight", "qformer.layers.1.ffn_text.fc1.weight"):
        assert torch.equal(start[name], stage1[name]), name
    assert os.path.isfile(os.path.join(chain["exports"][1], "lavis_ib_qformer_text.safetensors"))


@pipeline
def test_instruction_tuning_starts_from_stage2_with_nothing_random(chain):
    model = chain["instruct"]["built"]["model"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    report = model.init_report
    filled = {n for source, r in report.items() if source != "unfilled" for n in r["filled"]}
    assert report["unfilled"] == [] and filled == trainable
    start = chain["instruct"]["built"]["start"]
    stage2 = weights(chain["stage2"]["run"], 4, chain["root"])
    stage1 = weights(chain["stage1"]["run"], 4, chain["root"])
    assert torch.equal(start["llm_proj.weight"], stage2["llm_proj.weight"])   # trained in stage 2
    assert torch.equal(start["query_tokens"], stage2["query_tokens"])
    # the text side stage 1 trained, carried frozen through stage 2
    assert "qformer.word_embeddings.weight" not in stage2
    assert torch.equal(start["qformer.word_embeddings.weight"], stage1["qformer.word_embeddings.weight"])


@pipeline
def test_heldout_evaluation_scores_every_sample(chain):
    for dataset in ("gqa_test", "scienceqa_test"):
        with open(os.path.join(chain["heldout"], "eval", dataset, "metrics.json")) as f:
            metrics = json.load(f)
        with open(os.path.join(chain["heldout"], "eval", dataset, "predictions.jsonl")) as f:
            predictions = [json.loads(line) for line in f]
        assert "acc" in metrics and predictions
        assert metrics["num_samples"] == len(predictions), dataset

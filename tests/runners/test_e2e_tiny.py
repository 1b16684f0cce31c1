"""End to end on the real tiny InstructBLIP (tiny_vicuna) and fixture copies of six
held-in datasets, through the shipped `demo_tiny.yaml`: training, validation with the
real evaluation tasks, checkpoints without frozen weights, bit-identical ViT/LLM,
export to the Hugging Face layout, and FSDP on 2 processes against 1 process."""
import json
import os

import pytest
import torch
import torch.distributed.checkpoint as dcp
from omegaconf import OmegaConf

from runner_helpers import launch, losses
from lavis_ib.common.config import Config
from lavis_ib.common.paths import package_path
from lavis_ib.runners.strategies import setup_distributed

DEMO = package_path("configs/projects/instructblip/demo_tiny.yaml")
DATASETS = ("coco_caption", "textcaps", "ok_vqa", "aok_vqa", "ocr_vqa", "llava_detail")
# eval transforms and no dropout: runs on 1 and 2 processes see identical inputs
NO_DROPOUT = ["+model.qformer.hidden_dropout_prob=0.0",
              "+model.qformer.attention_probs_dropout_prob=0.0"]
DETERMINISTIC = [f"datasets.{n}.vis_processor.train.name=blip_image_eval" for n in DATASETS] + [
    *NO_DROPOUT, "run.max_iters=4", "run.log_every=1", "run.warmup_steps=2"]
# validate the VQA sets only: the caption metrics (Java) are the tasks' tests' business and
# would double this file's time on 2 cores
VQA_ONLY = [f"+datasets.{n}.eval_splits=[]" for n in ("coco_caption", "textcaps", "ocr_vqa")] + [
    "run.select_metric=[ok_vqa.acc,aok_vqa.acc]"]


@pytest.fixture(scope="module")
def demo_data(fixture_root):
    return fixture_root.path


@pytest.fixture(scope="module")
def demo_run(demo_data, tmp_path_factory):
    from lavis_ib.cli.session import build

    out = str(tmp_path_factory.mktemp("demo_run"))
    os.environ["LAVIS_IB_DEMO_DATA"] = demo_data
    try:
        cfg = Config(DEMO, [*DETERMINISTIC, *VQA_ONLY, "run.val_every=4", f"run.output_dir={out}"])
    finally:
        del os.environ["LAVIS_IB_DEMO_DATA"]
    _, model, _, runner = build(cfg, setup_distributed(cfg.run_cfg))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    result = runner.train()
    return {"model": model, "frozen": frozen, "trainable0": trainable, "result": result, "out": out}


def test_demo_trains_and_validates_with_the_real_tasks(demo_run):
    out = demo_run["out"]
    assert sorted(losses(out)) == [1, 2, 3, 4]
    vals = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    val = [r for r in vals if r["type"] == "val"][-1]
    assert set(val["metrics"]) == {"ok_vqa", "aok_vqa"}
    assert val["score"] == (val["metrics"]["ok_vqa"]["acc"] + val["metrics"]["aok_vqa"]["acc"]) / 2
    assert demo_run["result"]["best"]["step"] == 4
    for name in ("aok_vqa_val", "ok_vqa_val"):
        folder = os.path.join(out, "eval", "step_00000004", name)
        assert os.path.isfile(os.path.join(folder, "metrics.json"))
        ids = [json.loads(line)["id"] for line in open(os.path.join(folder, "predictions.jsonl"))]
        assert len(ids) == len(set(ids)) > 0


def test_vit_and_llm_bit_identical_and_checkpoint_has_no_frozen_weights(demo_run):
    model = demo_run["model"]
    params = dict(model.named_parameters())
    assert any(n.startswith("visual_encoder") for n in demo_run["frozen"])
    assert any(n.startswith("llm") for n in demo_run["frozen"])
    for name, before in demo_run["frozen"].items():
        assert torch.equal(params[name], before), name
    assert any(not torch.equal(params[n], p) for n, p in demo_run["trainable0"].items())
    ckpt = os.path.join(demo_run["out"], "checkpoints", "step_00000004", "model")
    keys = set(dcp.FileSystemReader(ckpt).read_metadata().state_dict_metadata)
    assert keys == set(demo_run["trainable0"])
    assert not any(k.startswith(("visual_encoder", "llm.")) for k in keys)


def test_export_writes_a_loadable_hugging_face_directory(demo_run, tmp_path):
    from lavis_ib.cli import export
    from lavis_ib.models.loading import load_model

    assert export.main([demo_run["out"], str(tmp_path / "hf")]) == 0
    assert os.path.isfile(tmp_path / "hf" / "config.json")
    mask = os.umask(0)
    os.umask(mask)
    for name in os.listdir(tmp_path / "hf"):   # readable as any file written here (0644)
        if os.path.isfile(tmp_path / "hf" / name):
            assert os.stat(tmp_path / "hf" / name).st_mode & 0o777 == 0o666 & ~mask, name
    loaded = load_model("instructblip", "tiny_vicuna", pretrained=str(tmp_path / "hf"))
    trained = dict(demo_run["model"].named_parameters())
    # The trained parts and the ViT must come back exactly. The frozen LLM's round trip
    # through the HF layout is the model package's own test (tests/models).
    checked = 0
    for name, param in loaded.named_parameters():
        if name in demo_run["trainable0"] or name.startswith("visual_encoder"):
            torch.testing.assert_close(param, trained[name], rtol=0, atol=0, msg=name)
            checked += 1
    assert checked > len(demo_run["trainable0"])


@pytest.mark.integration
def test_fsdp_on_two_processes_matches_one_process(demo_run, demo_data, tmp_path):
    out = str(tmp_path / "fsdp")
    proc = launch(DEMO, [*DETERMINISTIC, *VQA_ONLY, "run.val_every=4", "run.distributed=fsdp",
                         f"run.output_dir={out}"], nproc=2, timeout=200,
                  env={"LAVIS_IB_DEMO_DATA": demo_data})
    assert proc.returncode == 0, proc.stderr[-3000:]
    got, want = losses(out), losses(demo_run["out"])
    assert sorted(got) == sorted(want) == [1, 2, 3, 4]
    for step in want:
        assert got[step] == pytest.approx(want[step], abs=1e-5, rel=1e-5)
    # validation with the real generate on uneven rank shards (3 A-OKVQA samples on 2
    # ranks): every sample scored once, as in one process
    for name in ("ok_vqa_val", "aok_vqa_val"):
        ids = {}
        for run_dir in (out, demo_run["out"]):
            with open(os.path.join(run_dir, "eval", "step_00000004", name, "predictions.jsonl")) as f:
                ids[run_dir] = sorted(json.loads(line)["id"] for line in f)
        assert ids[out] == ids[demo_run["out"]] and len(set(ids[out])) == len(ids[out])


def test_activation_checkpointing_of_llm_blocks_gives_the_same_gradients(demo_data):
    from lavis_ib.datasets.loaders import MixtureLoader
    from lavis_ib.runners.strategies import Strategy
    from lavis_ib.cli.session import build

    os.environ["LAVIS_IB_DEMO_DATA"] = demo_data
    try:
        cfg = Config(DEMO, NO_DROPOUT)
    finally:
        del os.environ["LAVIS_IB_DEMO_DATA"]
    info = setup_distributed(cfg.run_cfg)
    _, plain, datasets, _ = build(cfg, info)
    _, ckpt, _, _ = build(cfg, info)
    run = OmegaConf.merge(cfg.run_cfg, {"activation_checkpointing": True})
    units = Strategy(run, info).wrap(ckpt)
    assert units is ckpt and len(ckpt.checkpoint_units()) == 2
    train = {n: s["train"] for n, s in datasets.items() if "train" in s}
    batch = MixtureLoader(train, None, 4, 4, 0, 1, seed=1).next_step()[0]
    for model in (plain, ckpt):
        model.train()
        model(batch)["loss_sum"].backward()
    grads = {n: p.grad for n, p in ckpt.named_parameters() if p.grad is not None}
    assert grads and all(n.split(".")[0] in ("query_tokens", "ln_vision", "qformer", "llm_proj")
                         for n in grads)
    for name, param in plain.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(grads[name], param.grad, rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.integration
def test_an_unreadable_training_image_is_logged_once_in_log_jsonl(demo_data, tmp_path):
    """Each skipped file reaches log.jsonl as one `bad_sample` event (name and reason)."""
    import glob
    import shutil

    from lavis_ib.cli.session import build

    data = str(tmp_path / "data")
    shutil.copytree(demo_data, data)
    images = sorted(glob.glob(os.path.join(data, "ok_vqa", "images", "**", "*.jpg"),
                              recursive=True))
    with open(images[0], "wb") as f:
        f.write(b"not a jpeg")
    os.environ["LAVIS_IB_DEMO_DATA"] = data
    try:
        cfg = Config(DEMO, [*DETERMINISTIC, *VQA_ONLY, "run.max_iters=8", "run.val_every=0",
                            "run.max_bad_sample_fraction=1.0",
                            f"run.output_dir={tmp_path / 'run'}"])
    finally:
        del os.environ["LAVIS_IB_DEMO_DATA"]
    _, _, _, runner = build(cfg, setup_distributed(cfg.run_cfg))
    runner.train()    # seeded: OK-VQA's damaged image is drawn within these steps
    events = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    bad = [e for e in events if e.get("event") == "bad_sample"]
    assert [os.path.basename(e["path"]) for e in bad] == [os.path.basename(images[0])], bad
    assert bad[0]["reason"]

"""docs/adding_a_dataset.md, run for real: the `my_vqa` plugin of docs/examples is
composed through its project file, built, sampled, mixed and trained on tiny_vicuna
for two steps with the real runner (validation with the `vqa` task included)."""
from __future__ import annotations

import json
import os

import pytest
import torch

from docs_helpers import EXAMPLES, QUESTIONS, ANSWERS
from lavis_ib import registry
from lavis_ib.common.config import Config
from lavis_ib.common.containers import to_plain
from lavis_ib.common.errors import ConfigError, DataError, RegistryError
from lavis_ib.datasets.datasets.base import BadSample
from lavis_ib.processors.text import normalize_question

PROJECT = os.path.join(EXAMPLES, "my_vqa_project.yaml")
TEMPLATES = ("Question: {question} Short answer:", "{question} Answer with a few words.")


def compose(my_vqa_root, ok_vqa_root, *options):
    return Config(PROJECT, [f"datasets.my_vqa.cache_root={my_vqa_root}",
                            f"datasets.ok_vqa.cache_root={ok_vqa_root}", *options])


@pytest.fixture(scope="module")
def cfg(my_vqa_root, ok_vqa_root):
    return compose(my_vqa_root, ok_vqa_root)


@pytest.fixture(scope="module")
def splits(cfg):
    return registry.get_builder_class("my_vqa")(cfg.config.datasets.my_vqa).build_datasets()


def test_plugin_registers_the_builder_and_the_default_yaml_is_merged(cfg):
    import my_vqa

    assert registry.get_builder_class("my_vqa") is my_vqa.MyVQABuilder
    entry = to_plain(cfg.config.datasets.my_vqa)
    # from the default YAML
    assert entry["text_processor"]["train"]["templates"] == list(TEMPLATES)
    assert entry["task"] == "vqa" and entry["prompt"] == "Question: {} Short answer:"
    # from the project, over the defaults
    assert entry["vis_processor"]["train"]["image_size"] == 32
    assert entry["sample_ratio"] == 2.0
    assert entry["generate"] == {"num_beams": 1, "max_length": 5, "min_length": 1}
    assert cfg.config.plugins == ["my_vqa"]


def test_training_samples(splits):
    train = splits["train"]
    assert type(train).__name__ == "MyVQADataset" and len(train) == 6
    for i in range(len(train)):
        sample = train[i]
        assert set(sample) == {"image", "text_input", "text_output"}
        assert sample["image"].shape == (3, 32, 32)
        question = normalize_question(QUESTIONS[i % 3])
        assert sample["text_input"] in {t.replace("{question}", question) for t in TEMPLATES}
        assert sample["text_output"] in ANSWERS[i % 3]
    # indices past len: later passes; every draw is a function of (seed, epoch, index)
    n = len(train)
    again = [train[i]["text_input"] for i in range(3 * n)]
    assert again == [train[i]["text_input"] for i in range(3 * n)]
    assert again[n:] != again[:n] * 2 or again[2 * n:] != again[:n]
    assert len({t for t in again}) > 3   # both templates occur


def test_eval_samples_and_collater(splits):
    val = splits["val"]
    assert type(val).__name__ == "MyVQAEvalDataset" and len(val) == 3
    sample = val[2]
    assert set(sample) == {"image", "question_id", "question", "text_input", "answers"}
    assert sample["question_id"] == "q8" and sample["question"] == QUESTIONS[2]
    assert sample["text_input"] == normalize_question(QUESTIONS[2])
    assert sample["answers"] == ["2", "two", "2", "2"]      # duplicates kept
    with pytest.raises(IndexError):
        val[len(val)]                                        # eval sets have no epochs
    batch = val.collater([val[0], val[1], BadSample("/x.jpg", "missing")])
    assert batch["image"].shape == (2, 3, 32, 32)
    assert batch["question_id"] == ["q6", "q7"] and batch["_bad_files"] == ["/x.jpg"]
    assert batch["_num_requested"] == 3


def test_unreadable_image_is_a_bad_sample(cfg, my_vqa_root, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(my_vqa_root, root)
    (root / "images" / "001.jpg").write_bytes(b"not a jpeg")
    entry = cfg.config.datasets.my_vqa.copy()
    entry.cache_root = str(root)
    train = registry.get_builder_class("my_vqa")(entry).build_datasets()["train"]
    bad = train[1]
    assert isinstance(bad, BadSample) and bad.path.endswith("001.jpg")


def test_documented_errors(cfg, my_vqa_root, ok_vqa_root, tmp_path):
    import my_vqa

    entry = cfg.config.datasets.my_vqa.copy()
    entry.cache_root = str(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"annotation file \(build_info.annotations.train\) "
                                        r"'.*nowhere/annotations/train.jsonl' does not exist"):
        registry.get_builder_class("my_vqa")(entry).build_datasets()
    with pytest.raises(ConfigError, match="plugin module 'my_vq' cannot be imported"):
        compose(my_vqa_root, ok_vqa_root, "plugins=[my_vq]")
    with pytest.raises(RegistryError, match="builder 'my_vqa' is already registered"):
        registry.register_builder("my_vqa")(type("Again", (my_vqa.MyVQABuilder,), {}))
    with pytest.raises(RegistryError, match="unknown builder 'my_vqa_nope'.*Registered builders"):
        registry.get_builder_class("my_vqa_nope")
    with pytest.raises(ConfigError, match="no setting 'templat'. Did you mean 'templates'"):
        registry.get_builder_class("my_vqa")(compose(
            my_vqa_root, ok_vqa_root, "+datasets.my_vqa.text_processor.train.templat=x"
        ).config.datasets.my_vqa).build_datasets()
    with pytest.raises(ConfigError, match="Did you mean 'sample_ratio'"):
        compose(my_vqa_root, ok_vqa_root, "datasets.my_vqa.sample_ration=1")
    training_only = type("TrainOnly", (my_vqa.MyVQABuilder,), {"eval_dataset_cls": None})
    with pytest.raises(ConfigError, match="training-only; remove build_info.annotations.val"):
        training_only(cfg.config.datasets.my_vqa).build_datasets()
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question_id": "q1", "image": "a.jpg", "question": "?"}\n')
    with pytest.raises(DataError, match=r"broken.jsonl:1: the record lacks \['answers'\]"):
        my_vqa.read_jsonl(str(broken))
    with pytest.raises(TypeError, match="unexpected arguments"):
        my_vqa.MyVQADataset(ann_paths=[], colour="red")


def test_mixing_weights_as_documented():
    from lavis_ib.datasets.mixing import mixing_weights

    p = mixing_weights({"my_vqa": 10_000, "ok_vqa": 90_000}, {"my_vqa": 2.0, "ok_vqa": 1.0})
    assert p["my_vqa"] == pytest.approx(0.40)
    assert mixing_weights({"my_vqa": 10_000, "ok_vqa": 90_000})["my_vqa"] == pytest.approx(0.25)
    assert mixing_weights({"my_vqa": 10_000, "ok_vqa": 90_000}, {"my_vqa": 0.0})["my_vqa"] == 0.0
    flat = mixing_weights({"my_vqa": 10_000, "ok_vqa": 90_000}, balanced=False)
    assert flat["my_vqa"] == pytest.approx(0.10)
    with pytest.raises(ConfigError):
        mixing_weights({"my_vqa": 10}, {"my_vqa": -1.0})
    # the runner's per-step draw follows these probabilities; ratio 0 is never drawn
    from lavis_ib.datasets.mixing import Mixer

    sizes = {"my_vqa": 10_000, "ok_vqa": 90_000}
    mixer = Mixer(sizes, {"my_vqa": 2.0}, seed=42)
    share = sum(mixer.choose(step) == "my_vqa" for step in range(4000)) / 4000
    assert share == pytest.approx(0.40, abs=0.03)
    off = Mixer(sizes, {"my_vqa": 0.0}, seed=42)
    assert {off.choose(step) for step in range(500)} == {"ok_vqa"}


@pytest.mark.integration
def test_two_training_steps_with_the_real_runner(my_vqa_root, ok_vqa_root, tmp_path):
    from lavis_ib.runners.strategies import setup_distributed
    from lavis_ib.cli.train import build

    out = str(tmp_path / "run")
    cfg = compose(my_vqa_root, ok_vqa_root, f"run.output_dir={out}", "run.log_every=1")
    task, model, datasets, runner = build(cfg, setup_distributed(cfg.run_cfg))
    assert set(datasets) == {"my_vqa", "ok_vqa"}
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    result = runner.train()
    assert result["step"] == 2
    records = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    train = [r for r in records if r["type"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in train)
    val = [r for r in records if r["type"] == "val"][-1]
    assert "acc" in val["metrics"]["my_vqa"]              # validated with the vqa task
    predictions = [json.loads(line) for line in
                   open(os.path.join(out, "eval", "step_00000002", "my_vqa_val", "predictions.jsonl"))]
    assert [p["id"] for p in predictions] == ["q6", "q7", "q8"]
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad)
    saved = Config(os.path.join(out, "config.yaml"))       # the run re-composes with its plugin
    assert saved.config.plugins == ["my_vqa"]
    # `lavis-ib export` reads the saved config and writes the HF layout; the run's plugin
    # is imported only when the command line names it too
    from lavis_ib import load_model
    from lavis_ib.cli.export import main as export

    assert export([out, str(tmp_path / "hf"), "--plugins", "my_vqa"]) == 0
    exported = load_model("instructblip", "tiny_vicuna", pretrained=str(tmp_path / "hf"))
    trained = dict(model.named_parameters())
    for name, param in exported.named_parameters():
        if name.startswith(("qformer.", "query_tokens", "llm_proj.")):
            assert torch.equal(param, trained[name]), name


def test_template_families_as_documented():
    from lavis_ib.processors.templates import TEMPLATE_FAMILIES

    assert {k: len(v) for k, v in TEMPLATE_FAMILIES.items()} == {"caption": 13, "vqa": 10, "qg": 6}

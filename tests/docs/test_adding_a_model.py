"""docs/adding_a_model.md, run for real: the `char_lm` plugin model of docs/examples is
composed through its project file, trained for a few steps by the real runner on fixture
OK-VQA, then evaluated by `python -m lavis_ib.evaluate` with generation (OK-VQA val) and
candidate ranking (IconQA test); the written predictions equal direct calls of the
model's contract methods, and its training loss and candidate scores agree."""
from __future__ import annotations

import json
import os

import pytest
import torch

from docs_helpers import EXAMPLES
from lavis_ib import registry
from lavis_ib.common.config import Config
from lavis_ib.common.containers import to_plain

PROJECT = os.path.join(EXAMPLES, "char_lm_project.yaml")


@pytest.fixture(scope="module")
def data_root(fixture_root) -> str:
    return fixture_root.path


def options(root: str, *more: str) -> list[str]:
    return [f"datasets.ok_vqa.cache_root={root}", f"datasets.iconqa.cache_root={root}", *more]


def batch_of(dataset, n: int = 3) -> dict:
    return dataset.collater([dataset[i] for i in range(min(n, len(dataset)))])


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    from lavis_ib.runners.strategies import setup_distributed
    from lavis_ib.cli.train import build

    out = str(tmp_path_factory.mktemp("char_lm_run"))
    cfg = Config(PROJECT, options(data_root, f"run.output_dir={out}", "run.log_every=1"))
    _, model, datasets, runner = build(cfg, setup_distributed(cfg.run_cfg))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = runner.train()
    return {"cfg": cfg, "model": model, "datasets": datasets, "out": out, "before": before,
            "result": result}


def test_plugin_registers_the_model_and_its_default_yaml(data_root):
    import char_lm

    cfg = Config(PROJECT, options(data_root))
    assert registry.get_model_class("char_lm") is char_lm.CharLM
    model_cfg = to_plain(cfg.config.model)
    assert model_cfg["width"] == 16 and model_cfg["patch"] == 8        # the default YAML
    assert model_cfg["hidden"] == 48                                    # the project's value
    assert char_lm.CharLM.generation_settings() == {"num_beams", "max_length", "min_length",
                                                    "length_penalty"}


def test_the_contract_on_a_batch(trained):
    model, val = trained["model"], trained["datasets"]["ok_vqa"]["val"]
    model.eval()
    batch = batch_of(val)
    assert model.llm_family == "charlm" and model.default_append_eos is True
    prompts = [f"Question: {t} Short answer:" for t in batch["text_input"]]
    answers = ["red", "two dogs", "no"]
    with torch.no_grad():
        out = model({"image": batch["image"], "text_input": prompts, "text_output": answers})
        scores, mask = model.score_candidates({"image": batch["image"], "prompt": prompts},
                                              [[a] for a in answers])
        default, _ = model.score_candidates({"image": batch["image"], "prompt": prompts},
                                            [[a] for a in answers], append_eos=None)
        ragged, ragged_mask = model.score_candidates(
            {"image": batch["image"], "prompt": prompts}, [["a"], ["a", "b", "c"], ["a", "b"]],
            append_eos=False)
        beams = model.generate({"image": batch["image"], "prompt": prompts}, num_beams=3,
                               max_length=4, min_length=2)
        one_by_one = [model.generate({"image": batch["image"][i:i + 1], "prompt": prompts[i]},
                                     num_beams=3, max_length=4, min_length=2)[0]
                      for i in range(3)]
    # one loss contract: loss = loss_sum / num_tokens, tokens = answer chars + EOS
    assert set(out) == {"loss", "loss_sum", "num_tokens"}
    assert int(out["num_tokens"]) == sum(len(a) + 1 for a in answers)
    assert torch.allclose(out["loss"], out["loss_sum"] / out["num_tokens"])
    # scoring with EOS (the default) is the training log-likelihood of the same answers
    assert torch.allclose(scores.sum(), -out["loss_sum"], atol=1e-4)
    assert torch.equal(default, scores) and mask.all()
    assert ragged.shape == (3, 3)
    assert ragged_mask.tolist() == [[True, False, False], [True, True, True], [True, True, False]]
    assert torch.isinf(ragged[~ragged_mask]).all() and torch.isfinite(ragged[ragged_mask]).all()
    assert beams == one_by_one and all(2 <= len(b) <= 4 for b in beams)


def test_training_through_the_real_runner(trained):
    out, model, before = trained["out"], trained["model"], trained["before"]
    assert trained["result"]["step"] == 4
    records = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    train = [r for r in records if r["type"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in train)
    val = [r for r in records if r["type"] == "val"][-1]
    assert "acc" in val["metrics"]["ok_vqa"]                 # validated by generation
    after = dict(model.named_parameters())
    assert torch.equal(after["vision.weight"], before["vision.weight"])   # frozen
    assert not torch.equal(after["gru.weight_hh_l0"], before["gru.weight_hh_l0"])
    assert sorted({n.split(".")[0] for n, p in after.items() if p.requires_grad}) == \
        sorted(model.trainable_module_names())


def test_evaluation_by_generation_and_ranking(trained, data_root, tmp_path):
    from lavis_ib.cli.evaluate import main as evaluate

    out_dir = str(tmp_path / "eval_run")
    assert evaluate(["--cfg-path", PROJECT, "--checkpoint", trained["out"], "--options",
                     *options(data_root, f"run.output_dir={out_dir}")]) == 0
    model, datasets = trained["model"], trained["datasets"]
    model.eval()

    def read(folder):
        folder = os.path.join(out_dir, "eval", folder)
        return ([json.loads(line) for line in open(os.path.join(folder, "predictions.jsonl"))],
                json.load(open(os.path.join(folder, "metrics.json"))))

    # generation: the dataset's settings, length_penalty taken from the `charlm` key
    records, metrics = read("ok_vqa_val")
    val = datasets["ok_vqa"]["val"]
    batch = batch_of(val, len(val))
    with torch.no_grad():
        direct = model.generate({"image": batch["image"], "prompt": [
            f"Question: {t} Short answer:" for t in batch["text_input"]]},
            num_beams=2, max_length=8, min_length=1, length_penalty=0)
    assert [r["answer"] for r in records] == [d.strip() for d in direct]
    assert "acc" in metrics and metrics["num_samples"] == len(val)

    # ranking: the options of each question, with the model's default append_eos
    records, metrics = read("iconqa_test")
    test = datasets["iconqa"]["test"]
    batch = batch_of(test, len(test))
    prompts = [f"Question: {q} Options: "
               + " ".join(f"({chr(97 + k)}) {c}" for k, c in enumerate(choices)) + ". Short answer:"
               for q, choices in zip(batch["question"], batch["choices"])]
    with torch.no_grad():
        scores, _ = model.score_candidates({"image": batch["image"], "prompt": prompts},
                                           [list(c) for c in batch["choices"]])
    assert [r["pred_idx"] for r in records] == scores.argmax(dim=1).tolist()
    assert 0.0 <= metrics["acc"] <= 100.0 and metrics["num_samples"] == len(test)
    summary = json.load(open(os.path.join(out_dir, "eval", "metrics.json")))
    assert set(summary) == {"ok_vqa", "iconqa"}


def test_a_mapping_without_the_model_family_is_an_error(data_root, tmp_path):
    """Per-family values are looked up under the family the model declares; a mapping
    without it is a ConfigError naming the dataset, the key and the family."""
    from lavis_ib.common.errors import ConfigError
    from lavis_ib.cli.evaluate import main as evaluate

    text = open(PROJECT).read()
    assert "length_penalty: {charlm: 0}" in text
    project = tmp_path / "no_charlm.yaml"
    project.write_text(text.replace("length_penalty: {charlm: 0}", "length_penalty: {vicuna: 0}"))
    with pytest.raises(ConfigError) as error:
        evaluate(["--cfg-path", str(project), "--options",
                  *options(data_root, f"run.output_dir={tmp_path / 'out'}")])
    assert all(word in str(error.value) for word in ("ok_vqa", "length_penalty", "charlm"))


def test_documented_errors(data_root, tmp_path):
    import char_lm
    from lavis_ib.common.errors import ConfigError, RegistryError
    from lavis_ib.cli.evaluate import main as evaluate

    with pytest.raises(RegistryError, match="unknown model 'char_ln'. Did you mean 'char_lm'"):
        Config(PROJECT, options(data_root, "model.arch=char_ln"))
    with pytest.raises(ConfigError, match="unknown model_type 'small' for CharLM.*Known types: tiny"):
        Config(PROJECT, options(data_root, "model.model_type=small"))
    with pytest.raises(RegistryError, match="must be a subclass of lavis_ib.models.base_model.BaseModel"):
        registry.register_model("not_a_model")(torch.nn.Linear)
    with pytest.raises(RegistryError, match="model 'char_lm' is already registered"):
        registry.register_model("char_lm")(type("Again", (char_lm.CharLM,), {}))
    project = tmp_path / "beams.yaml"
    project.write_text(open(PROJECT).read().replace("num_beams: 2", "beams: 2"))
    with pytest.raises(ConfigError) as error:
        evaluate(["--cfg-path", str(project), "--options",
                  *options(data_root, f"run.output_dir={tmp_path / 'out'}")])
    assert "generate.beams" in str(error.value) and "num_beams" in str(error.value)

"""docs/adding_a_task.md, run for real: the `exact_match` task of docs/examples evaluates
`my_vqa` through the project file, the real runner and the shared evaluation loop on
tiny_vicuna; its predictions equal direct `model.generate` calls with the documented
prompt, and its metrics equal a recomputation from predictions.jsonl."""
from __future__ import annotations

import json
import os

import pytest
import torch

from docs_helpers import EXAMPLES, QUESTIONS
from lavis_ib import registry
from lavis_ib.common.config import Config
from lavis_ib.common.errors import ConfigError, DataError, LavisIbError, RegistryError
from lavis_ib.processors.text import normalize_question

PROJECT = os.path.join(EXAMPLES, "exact_match_project.yaml")


def compose(root, *options):
    return Config(PROJECT, [f"datasets.my_vqa.cache_root={root}", *options])


def task_for(root, *options):
    cfg = compose(root, *options).config
    entry = cfg.datasets.my_vqa
    return registry.get_task_class(entry.task).for_dataset(
        "my_vqa", entry, model_cls=registry.get_model_class(cfg.model.arch))


@pytest.fixture(scope="module")
def evaluated(my_vqa_root, tmp_path_factory):
    from lavis_ib.runners.strategies import setup_distributed
    from lavis_ib.cli.train import build

    out = str(tmp_path_factory.mktemp("exact_match_run"))
    cfg = compose(my_vqa_root, f"run.output_dir={out}")
    _, model, datasets, runner = build(cfg, setup_distributed(cfg.run_cfg))
    results = runner.evaluate()
    return {"model": model, "datasets": datasets, "results": results, "out": out}


def test_registered_by_the_plugin_with_checked_settings(my_vqa_root):
    import exact_match_task

    assert registry.get_task_class("exact_match") is exact_match_task.ExactMatchTask
    task = task_for(my_vqa_root)
    assert task.settings == {"inference": "generate", "prompt": "Question: {} Short answer:",
                             "generate": {"num_beams": 1, "max_length": 5, "min_length": 1},
                             "eval_splits": ["val"]}


def test_evaluation_loop_writes_predictions_equal_to_direct_generate(evaluated):
    model, out = evaluated["model"], evaluated["out"]
    folder = os.path.join(out, "eval", "my_vqa_val")
    records = [json.loads(line) for line in open(os.path.join(folder, "predictions.jsonl"))]
    assert [r["id"] for r in records] == ["q6", "q7", "q8"]
    val = evaluated["datasets"]["my_vqa"]["val"]
    batch = val.collater([val[i] for i in range(len(val))])
    prompts = [f"Question: {normalize_question(QUESTIONS[i % 3])} Short answer:" for i in (6, 7, 8)]
    with torch.no_grad():
        direct = model.generate({"image": batch["image"], "prompt": prompts},
                                num_beams=1, max_length=5, min_length=1)
    assert [r["prediction"] for r in records] == [d.strip() for d in direct]
    assert records[2]["answers"] == ["2", "two", "2", "2"]


def test_metrics_equal_a_recomputation_from_the_predictions(evaluated):
    import exact_match_task

    folder = os.path.join(evaluated["out"], "eval", "my_vqa_val")
    records = [json.loads(line) for line in open(os.path.join(folder, "predictions.jsonl"))]
    metrics = json.load(open(os.path.join(folder, "metrics.json")))
    hits = [exact_match_task.normalize_answer(r["prediction"])
            in {exact_match_task.normalize_answer(a) for a in r["answers"]} for r in records]
    assert metrics["match"] == pytest.approx(100.0 * sum(hits) / 3)
    assert metrics["mean_words"] == pytest.approx(sum(len(r["prediction"].split()) for r in records) / 3)
    assert metrics["num_samples"] == 3
    assert evaluated["results"]["my_vqa"]["match"] == metrics["match"]
    summary = json.load(open(os.path.join(evaluated["out"], "eval", "metrics.json")))
    assert set(summary) == {"my_vqa"}


def test_metric_on_hand_made_records(my_vqa_root):
    task = task_for(my_vqa_root)
    records = [{"id": 1, "prediction": "The Red.", "answers": ["red", "dark red"]},
               {"id": 2, "prediction": "a blue one", "answers": ["green"]}]
    assert task.metrics(records, None) == {"match": 50.0, "mean_words": 2.5}
    with pytest.raises(DataError, match="no predictions to score"):
        task.metrics([], None)


def test_documented_errors(my_vqa_root, evaluated):
    with pytest.raises(RegistryError, match="Did you mean 'exact_match'"):
        task_for(my_vqa_root, "datasets.my_vqa.task=exact_mach")
    with pytest.raises(ConfigError, match="does not read 'append_eos'"):
        task_for(my_vqa_root, "+datasets.my_vqa.append_eos=true")
    with pytest.raises(ConfigError, match="not an evaluation setting. Did you mean 'prompt'"):
        task_for(my_vqa_root, "+datasets.my_vqa.promt=x")
    with pytest.raises(ConfigError, match="'rank' is not supported by the 'exact_match' task"):
        task_for(my_vqa_root, "+datasets.my_vqa.inference=rank")
    with pytest.raises(ConfigError, match="generate.beams: model.generate has no such argument"):
        task_for(my_vqa_root, "+datasets.my_vqa.generate.beams=5")
    with pytest.raises(ConfigError, match="needs a prompt with one '{}'"):
        task_for(my_vqa_root, "datasets.my_vqa.prompt='Short answer:'")
    task = task_for(my_vqa_root)
    with pytest.raises(DataError, match="needs sample key\\(s\\) answers"):
        task.valid_step(evaluated["model"], {"question_id": ["q1"], "image": torch.zeros(1, 3, 32, 32)})


def test_the_loop_rejects_records_without_id_or_missing_samples(my_vqa_root, evaluated):
    import exact_match_task
    from lavis_ib.runners.eval_loop import evaluate_split

    val = evaluated["datasets"]["my_vqa"]["val"]
    entry = compose(my_vqa_root).config.datasets.my_vqa
    kwargs = dict(batch_size=4, num_workers=0, device=torch.device("cpu"), out_dir=None)

    class NoId(exact_match_task.ExactMatchTask):
        def valid_step(self, model, samples):
            return [{"prediction": "x"} for _ in samples["question_id"]]

    class DropsOne(exact_match_task.ExactMatchTask):
        def valid_step(self, model, samples):
            return [{"id": i, "prediction": "x", "answers": []} for i in samples["question_id"][1:]]

    with pytest.raises(LavisIbError, match="returned a record without 'id' for my_vqa/val"):
        evaluate_split(evaluated["model"], NoId.for_dataset("my_vqa", entry), val, "my_vqa", "val", **kwargs)
    with pytest.raises(LavisIbError, match="2 unique ids and 0 unreadable samples for 3 samples"):
        evaluate_split(evaluated["model"], DropsOne.for_dataset("my_vqa", entry), val, "my_vqa", "val", **kwargs)


def test_setting_keys_as_documented():
    from lavis_ib.tasks.eval_settings import ALL_EVAL_KEYS
    from lavis_ib.tasks.eval_task import EvalTask

    guide = open(os.path.join(EXAMPLES, "..", "adding_a_task.md")).read()
    listing = guide.split("these eleven keys", 1)[1].split("\n\n", 1)[0]
    assert len(ALL_EVAL_KEYS) == 11
    assert all(f"`{key}`" in listing for key in ALL_EVAL_KEYS)
    assert EvalTask.EVAL_KEYS == {"inference", "prompt", "prompt_fields", "generate",
                                  "eval_subset", "eval_splits", "length_grouped"}


def test_a_setting_of_its_own_is_read_from_cfg_and_checked_in_check_settings(my_vqa_root):
    import exact_match_task

    class WithThreshold(exact_match_task.ExactMatchTask):
        @classmethod
        def _check_settings(cls, name, settings, given):
            super()._check_settings(name, settings, given)
            if not 0.0 <= float(given.get("threshold", 0.5)) <= 1.0:
                raise ConfigError(f"datasets.{name}.threshold must lie in [0, 1].")

    entry = compose(my_vqa_root, "+datasets.my_vqa.threshold=0.3").config.datasets.my_vqa
    assert WithThreshold.for_dataset("my_vqa", entry).cfg["threshold"] == 0.3
    entry = compose(my_vqa_root, "+datasets.my_vqa.threshold=2.0").config.datasets.my_vqa
    with pytest.raises(ConfigError, match="threshold must lie in"):
        WithThreshold.for_dataset("my_vqa", entry)
    entry = compose(my_vqa_root, "+datasets.my_vqa.prompts=x").config.datasets.my_vqa
    with pytest.raises(ConfigError, match="Did you mean 'prompt'"):
        WithThreshold.for_dataset("my_vqa", entry)

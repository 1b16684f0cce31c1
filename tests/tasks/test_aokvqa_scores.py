"""A-OKVQA scores equal transcriptions of LAVIS's rule and of the authors' scorer
(`aokvqa_reference`), for direct answer and multiple choice, on a seeded corpus; and one
project evaluates both settings of the same files through `builder:`."""
import random

import pytest

from lavis_ib import registry
from lavis_ib.common.config import compose_dataset

from aokvqa_reference import lavis, official

WORDS = ["dog", "a dog", "Dog", "dogs", "cat", "two", "2", "red car", "red  car", "red car."]


def corpus(n=400, seed=7):
    rng = random.Random(seed)
    dataset, preds = [], {}
    for k in range(n):
        choices = rng.sample(WORDS, 4)
        dataset.append({"question_id": f"q{k}", "choices": choices,
                        "correct_choice_idx": rng.randrange(4),
                        "direct_answers": [rng.choice(WORDS[:6]) for _ in range(10)],
                        "difficult_direct_answer": rng.random() < 0.3})
        preds[f"q{k}"] = rng.choice(WORDS)
    return dataset, preds


def test_direct_answer_equals_both_scorers():
    dataset, preds = corpus()
    t = registry.get_task_class("vqa").for_dataset("aok_vqa", compose_dataset("aok_vqa"))
    records = [{"id": d["question_id"], "answer": preds[d["question_id"]],
                "answers": d["direct_answers"], "difficult": d["difficult_direct_answer"]}
               for d in dataset]
    metrics = t.metrics(records, None)
    assert metrics["acc"] == pytest.approx(lavis(dataset, preds), abs=1e-9)
    assert metrics["acc_official"] == pytest.approx(official(dataset, preds, False), abs=1e-9)
    assert metrics["acc"] != pytest.approx(metrics["acc_official"])   # the corpus tells them apart
    # raw strings: "a dog" does not match "dog" (a normalising scorer would say it does)
    one = [{"id": 0, "answer": "a dog", "answers": ["dog"] * 10, "difficult": False}]
    assert t.metrics(one, None)["acc"] == 0.0


def test_multiple_choice_equals_the_authors_scorer():
    dataset, _ = corpus(seed=8)
    rng = random.Random(3)
    t = registry.get_task_class("multiple_choice").for_dataset(
        "aok_vqa_mc", compose_dataset("aok_vqa_mc", {"builder": "aok_vqa",
                                                     "task": "multiple_choice",
                                                     "metric": "aokvqa"}))
    records, preds = [], {}
    for d in dataset:
        pick = rng.randrange(4)
        preds[d["question_id"]] = d["choices"][pick]
        records.append({"id": d["question_id"], "pred_idx": pick, "answer": d["choices"][pick],
                        "correct_choice_idx": d["correct_choice_idx"],
                        "correct_answer": d["choices"][d["correct_choice_idx"]],
                        "num_choices": 4})
    metrics = t.metrics(records, None)
    assert metrics["acc_official"] == pytest.approx(official(dataset, preds, True), abs=1e-9)
    by_index = 100 * sum(r["pred_idx"] == r["correct_choice_idx"] for r in records) / len(records)
    assert metrics["acc"] == pytest.approx(by_index)


def test_one_project_evaluates_both_settings(fixture_root):
    from lavis_ib.common.config import Config
    from lavis_ib.common.paths import package_path

    fx = fixture_root.overrides["aok_vqa"]
    options = [f"datasets.aok_vqa.build_info={fx['build_info']}".replace("'", '"'),
               f"datasets.aok_vqa_mc.build_info={fx['build_info']}".replace("'", '"')]
    cfg = Config(package_path("configs/projects/instructblip/eval_aokvqa_vicuna7b.yaml"), options)
    da, mc = cfg.datasets_cfg.aok_vqa, cfg.datasets_cfg.aok_vqa_mc
    assert (da.task, da.metric, mc.task, mc.metric) == ("vqa", "aokvqa", "multiple_choice", "aokvqa")
    settings = registry.get_task_class("multiple_choice").for_dataset("aok_vqa_mc", mc).settings
    assert settings["inference"] == "rank" and "generate" not in settings
    assert settings["prompt"] == "Question: {} Options: {}. Short answer:"
    built = registry.get_builder_class(mc.builder)(mc).build_datasets()
    sample = built["val"][0]
    assert {"choices", "correct_choice_idx", "difficult_direct_answer"} <= set(sample)

"""Test splits scored by a server: evaluating VizWiz test and A-OKVQA test (no answers)
writes the JSON the VizWiz-VQA server and the A-OKVQA leaderboard accept, beside the
predictions, while val splits are scored locally as before.

The formats, as their owners document them: VizWiz-VQA (vizwiz.org, VQA challenge)
``[{"image": "VizWiz_test_00000000.jpg", "answer": "..."}]``; A-OKVQA (allenai/aokvqa
README, "Evaluation") ``{"<question_id>": {"multiple_choice": "<prediction>",
"direct_answer": "<prediction>"}}``, either setting may be left out, the multiple-choice
prediction being one of the question's choices (its eval_predictions.py compares texts).
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from lavis_ib.common.config import compose_dataset
from lavis_ib.common.registry import registry
from lavis_ib.runners.eval_loop import evaluate_datasets
from lavis_ib.tasks.submissions import aokvqa_results, merge_aokvqa, vizwiz_results
from lavis_ib.testing.fixtures import write_image

SHORT = {"num_beams": 1, "max_length": 3, "min_length": 1}
EVAL_PROC = {"eval": {"name": "blip_image_eval", "image_size": 32}}
AOKVQA_TEST = [  # the official test file's fields: no correct choice, no direct answers
    {"split": "test", "image_id": 900, "question_id": "2LeHQxiZ9BQrNgGDkWBkzj",
     "question": "What is the purpose of the cones?", "choices": ["decor", "traffic", "sale", "game"],
     "difficult_direct_answer": False},
    {"split": "test", "image_id": 901, "question_id": "3kW2bVnXc5tqDHiF8fZc5S",
     "question": "Why is the dog wet?", "choices": ["rain", "bath", "swim", "hose"],
     "difficult_direct_answer": True},
]


def test_the_formats_written_out():
    records = [{"id": "VizWiz_test_00000001", "answer": "soup"},
               {"id": "VizWiz_test_00000000", "answer": "unanswerable"}]
    images = {"VizWiz_test_00000000": "VizWiz_test_00000000.jpg",
              "VizWiz_test_00000001": "VizWiz_test_00000001.jpg"}
    assert vizwiz_results(records, images) == [
        {"image": "VizWiz_test_00000001.jpg", "answer": "soup"},
        {"image": "VizWiz_test_00000000.jpg", "answer": "unanswerable"}]
    da = aokvqa_results([{"id": "q1", "answer": "traffic"}], "direct_answer")
    mc = aokvqa_results([{"id": "q1", "answer": "sale"}, {"id": "q2", "answer": "bath"}],
                        "multiple_choice")
    assert da == {"q1": {"direct_answer": "traffic"}}
    both = {"q1": {"direct_answer": "traffic", "multiple_choice": "sale"},
            "q2": {"multiple_choice": "bath"}}
    assert merge_aokvqa(merge_aokvqa({}, da, "direct_answer"), mc, "multiple_choice") == both
    assert merge_aokvqa(merge_aokvqa({}, mc, "multiple_choice"), da, "direct_answer") == both
    # a second evaluation of one setting replaces that setting's answers only
    again = merge_aokvqa(both, {"q2": {"multiple_choice": "swim"}}, "multiple_choice")
    assert again == {"q1": {"direct_answer": "traffic"}, "q2": {"multiple_choice": "swim"}}


@pytest.fixture(scope="module")
def aokvqa_with_test(fixture_root, tmp_path_factory):
    """The A-OKVQA fixture plus a test split in the official test format."""
    root = tmp_path_factory.mktemp("aokvqa_test")
    rng = np.random.default_rng(1)
    for row in AOKVQA_TEST:
        write_image(str(root / "test2017" / f"{row['image_id']:012d}.jpg"), rng)
    path = root / "aokvqa_v1p0_test.json"
    path.write_text(json.dumps(AOKVQA_TEST))
    info = fixture_root.overrides["aok_vqa"]["build_info"]
    # one image root for train and val (the fixture's images, copied) and test (written above)
    for sub in ("train2017", "val2017"):
        shutil.copytree(os.path.join(info["images"]["storage"], sub), root / sub)
    annotations = {**info["annotations"], "test": {"storage": str(path)}}
    return {"build_info": {"annotations": annotations, "images": {"storage": str(root)}}}


def evaluate(model, entries, out_root):
    """Evaluate dataset entries {name: overrides} in this process, as `lavis-ib evaluate`
    does (evaluation loop, split folders, report_split)."""
    datasets, cfgs = {}, {}
    for name, overrides in entries.items():
        cfg = compose_dataset(name, overrides)
        cfgs[name] = cfg
        builder = registry.get_builder_class(str(cfg.get("builder") or name))
        built = builder(cfg).build_datasets()
        datasets[name] = {s: built[s] for s in cfg.eval_splits}
    return evaluate_datasets(model, datasets, cfgs, [], batch_size=2, num_workers=0,
                             device=torch.device("cpu"), out_root=str(out_root))


def read(path):
    with open(path) as f:
        return json.load(f)


def test_vizwiz_test_split_writes_the_servers_file(tiny_flant5, fixture_root, tmp_path):
    vizwiz = {**fixture_root.overrides["vizwiz_vqa"], "eval_splits": ["val", "test"],
              "generate": SHORT, "vis_processor": EVAL_PROC}
    results = evaluate(tiny_flant5, {"vizwiz_vqa": vizwiz}, tmp_path / "eval")
    assert "acc" in results["vizwiz_vqa"]                     # val: scored here
    test = results["vizwiz_vqa_test"]
    assert test["num_scored"] == 0 and "acc" not in test      # test: scored by the server
    submitted = read(tmp_path / "eval" / "submissions" / "vizwiz_vqa_test.json")
    with open(tmp_path / "eval" / "vizwiz_vqa_test" / "predictions.jsonl") as f:
        predictions = [json.loads(line) for line in f]
    assert isinstance(submitted, list) and len(submitted) == 2
    assert [sorted(entry) for entry in submitted] == [["answer", "image"]] * 2
    assert [e["image"] for e in submitted] == ["VizWiz_test_00000000.jpg", "VizWiz_test_00000001.jpg"]
    assert [e["answer"] for e in submitted] == [p["answer"] for p in predictions]
    assert all(isinstance(e["answer"], str) for e in submitted)
    # only the server's split gets a file
    assert os.listdir(tmp_path / "eval" / "submissions") == ["vizwiz_vqa_test.json"]


def test_aokvqa_test_split_writes_the_leaderboards_file(tiny_flant5, aokvqa_with_test, tmp_path):
    direct = {**aokvqa_with_test, "eval_splits": ["val", "test"], "generate": SHORT,
              "vis_processor": EVAL_PROC}
    choice = {**aokvqa_with_test, "builder": "aok_vqa", "task": "multiple_choice",
              "metric": "aokvqa", "eval_splits": ["val", "test"], "vis_processor": EVAL_PROC}
    results = evaluate(tiny_flant5, {"aok_vqa": direct, "aok_vqa_mc": choice}, tmp_path / "eval")
    assert {"acc", "acc_official"} <= set(results["aok_vqa"]) and "acc" in results["aok_vqa_mc"]
    for name in ("aok_vqa_test", "aok_vqa_mc_test"):
        assert results[name]["num_scored"] == 0 and "acc" not in results[name]
    folder = tmp_path / "eval" / "submissions"
    assert sorted(os.listdir(folder)) == ["aok_vqa_mc_test.json", "aok_vqa_test.json",
                                          "aokvqa_predictions_test.json"]
    qids = [row["question_id"] for row in AOKVQA_TEST]
    both = read(folder / "aokvqa_predictions_test.json")
    assert isinstance(both, dict) and sorted(both) == sorted(qids)
    for row in AOKVQA_TEST:
        entry = both[row["question_id"]]
        assert sorted(entry) == ["direct_answer", "multiple_choice"]
        assert entry["multiple_choice"] in row["choices"]            # a valid choice's text
        assert isinstance(entry["direct_answer"], str)
    assert read(folder / "aok_vqa_test.json") == {q: {"direct_answer": both[q]["direct_answer"]}
                                                  for q in qids}
    assert read(folder / "aok_vqa_mc_test.json") == {q: {"multiple_choice": both[q]["multiple_choice"]}
                                                     for q in qids}
    with open(tmp_path / "eval" / "aok_vqa_mc_test" / "predictions.jsonl") as f:
        mc = {r["id"]: r for r in map(json.loads, f)}
    assert all(mc[q]["answer"] == both[q]["multiple_choice"] for q in qids)
    assert all(mc[q]["correct_choice_idx"] is None for q in qids)


def test_the_report_reads_no_number_from_a_server_split(tmp_path):
    """A split scored by its server gives the report no number: the next split is read."""
    from lavis_ib.report.mapping import find_split

    for split, metrics in (("test", {"num_samples": 2, "num_scored": 0}), ("val", {"acc": 31.5})):
        (tmp_path / f"vizwiz_vqa_{split}").mkdir()
        (tmp_path / f"vizwiz_vqa_{split}" / "metrics.json").write_text(json.dumps(metrics))
    assert find_split(str(tmp_path), "vizwiz_vqa")[0] == "val"
    assert find_split(str(tmp_path), "vizwiz_vqa", ("test",)) == (None, None)

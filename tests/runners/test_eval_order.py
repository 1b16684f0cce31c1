"""Evaluation batches grouped by prompt length: the predictions file is byte for byte the
one of dataset-order batches and of one sample at a time (tiny_vicuna, generation and
ranking), the batches really hold prompts of closer lengths (read back from the batches
the loader yields), the ranks' shards stay balanced, and an interrupted evaluation
resumes by sample id."""
from __future__ import annotations

import json
import logging
import os

import pytest
import torch
import yaml

from lavis_ib.common.errors import ConfigError
from lavis_ib.runners import eval_loop, eval_order
from lavis_ib.runners.eval_loop import evaluate_split

# GQA questions of mixed lengths, short and long alternating (dataset order mixes them)
QUESTIONS = [
    "Is it red?",
    "What is the color of the large vehicle that is parked next to the tall building on the left?",
    "Who is there?",
    "Which kind of animal is standing on the grass behind the wooden fence near the small house?",
    "Is the sky blue?",
    "What is the man on the left side of the picture holding in his right hand?",
    "Any dogs?",
    "Are there both cars and trucks in this picture, and are they the same color as the sign?",
    "Is it day?",
    "What is the piece of furniture that the woman in the white shirt is sitting on?",
    "Where is it?",
    "How many people are crossing the street in front of the red bus at the intersection?",
    "What is it?",
    "Is the small cat to the left or to the right of the brown dog that is lying down?",
]
CANDIDATES = ["yes", "no", "red", "blue", "dog", "cat", "bus", "a man", "the sofa", "two"]
SHORT = {"num_beams": 2, "max_length": 4, "min_length": 1}


def write_mixed_gqa(folder, fixture_root) -> dict:
    """A GQA test split of QUESTIONS over the fixture's three images; its dataset entry."""
    gqa = fixture_root.overrides["gqa"]["build_info"]
    images = sorted(os.listdir(gqa["images"]["storage"]))
    questions = {str(3000 + i): {"imageId": images[i % len(images)].rsplit(".", 1)[0],
                                 "question": q, "answer": "yes", "fullAnswer": "Yes.",
                                 "isBalanced": True, "types": {}, "semantic": []}
                 for i, q in enumerate(QUESTIONS)}
    path = os.path.join(str(folder), "mixed_questions.json")
    with open(path, "w") as f:
        json.dump(questions, f)
    return {"build_info": {"annotations": {"test": {"storage": path}},
                           "images": {"storage": gqa["images"]["storage"]}},
            "vis_processor": {"eval": {"name": "blip_image_eval", "image_size": 32}},
            "generate": SHORT}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, fixture_root):
    """(project path, composed `datasets` config) with `gqa` = the mixed-length split."""
    from lavis_ib.common.config import Config

    folder = tmp_path_factory.mktemp("eval_order")
    path = folder / "project.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"arch": "instructblip", "model_type": "tiny_vicuna"},
        "datasets": {"gqa": write_mixed_gqa(folder, fixture_root)},
        "run": {"task": "instruction_tuning", "evaluate_only": True, "batch_size_eval": 4,
                "num_workers": 0, "amp": "none", "distributed": "none", "device": "cpu",
                "seed": 0, "output_dir": str(folder / "run")}}))
    return str(path), Config(str(path)).datasets_cfg


def build(datasets_cfg, model, **entry):
    """(task, test split) of the mixed gqa entry with `entry` keys over it."""
    from lavis_ib import registry

    cfg = datasets_cfg["gqa"].copy()
    if entry.get("inference") == "rank":
        cfg.pop("generate")
    for key, value in entry.items():
        cfg[key] = value
    split = registry.get_builder_class("gqa")(cfg).build_datasets()["test"]
    task = registry.get_task_class(cfg.task).for_dataset("gqa", cfg, model_cls=type(model))
    return task, split


def run(model, task, split, out_dir, batch_size=4, grouped=True, fingerprint=None):
    evaluate_split(model, task, split, "gqa", "test", batch_size=batch_size, num_workers=0,
                   device=torch.device("cpu"), out_dir=str(out_dir), fingerprint=fingerprint,
                   length_grouped=grouped)
    return open(os.path.join(str(out_dir), "predictions.jsonl")).read()


RANK = {"inference": "rank", "candidates": CANDIDATES}


@pytest.mark.parametrize("entry", [{}, RANK], ids=["generate", "rank"])
def test_grouped_predictions_equal_dataset_order_and_one_at_a_time(mixed, tiny_vicuna, tmp_path,
                                                                   entry):
    task, split = build(mixed[1], tiny_vicuna, **entry)
    grouped = run(tiny_vicuna, task, split, tmp_path / "grouped")
    assert grouped == run(tiny_vicuna, task, split, tmp_path / "order", grouped=False)
    assert grouped == run(tiny_vicuna, task, split, tmp_path / "single", batch_size=1)
    records = [json.loads(line) for line in grouped.splitlines()]
    assert [r["id"] for r in records] == [str(3000 + i) for i in range(len(QUESTIONS))]
    assert all(r["answer"] for r in records)


def batch_prompt_spreads(loader, task) -> list[int]:
    """max - min prompt length of each batch the loader yields, read from the batch."""
    spreads = []
    for batch in loader:
        lengths = [len(p) for p in task.prompts(batch)]
        spreads.append(max(lengths) - min(lengths))
    return spreads


def test_batches_hold_prompts_of_close_length(mixed, tiny_vicuna, caplog):
    task, split = build(mixed[1], tiny_vicuna)
    indices = list(range(len(split)))
    loaders = {grouped: eval_loop.shard_loader(tiny_vicuna, task, split, indices, split,
                                               batch_size=4, num_workers=0,
                                               length_grouped=grouped, desc="gqa/test")
               for grouped in (False, True)}
    order, grouped = (batch_prompt_spreads(loaders[g], task) for g in (False, True))
    assert len(order) == len(grouped) == 4
    # dataset order mixes short and long questions in every batch; grouped batches don't
    assert sum(grouped) * 3 < sum(order), (grouped, order)
    seen = [int(i) for batch in loaders[True] for i in batch["question_id"]]
    assert sorted(seen) == [3000 + i for i in indices]        # each sample once


def test_shards_are_balanced_and_cover_every_sample():
    lengths = [len(q) for q in QUESTIONS] * 3 + [5]            # 43 samples
    for world in (1, 2, 3):
        shards = [eval_order.grouped_batches(lengths, 4, r, world) for r in range(world)]
        flat = [[p for b in shard for p in b] for shard in shards]
        assert sorted(p for f in flat for p in f) == list(range(len(lengths)))
        assert max(map(len, flat)) - min(map(len, flat)) <= 1
        for shard in shards:
            assert all(len(b) <= 4 for b in shard)
            # each rank's batches come longest first
            tops = [max(lengths[p] for p in b) for b in shard]
            assert tops == sorted(tops, reverse=True)


@pytest.mark.parametrize("entry, why", [
    ({"aggregate": "lavis_segment_mean", **RANK}, "aggregate lavis_segment_mean divides"),
    ({"prompt": "Describe the picture."}, "every prompt has the same length")],
    ids=["lavis_segment_mean", "one_prompt"])
def test_dataset_order_is_kept_where_grouping_changes_records_or_nothing(mixed, tiny_vicuna,
                                                                         caplog, entry, why):
    task, split = build(mixed[1], tiny_vicuna, **entry)
    with caplog.at_level(logging.INFO, logger="lavis_ib.runners.eval_loop"):
        loader = eval_loop.shard_loader(tiny_vicuna, task, split, list(range(len(split))), split,
                                        batch_size=4, num_workers=0, length_grouped=True,
                                        desc="gqa/test")
    assert f"not grouped by prompt length: {why}" in caplog.text
    ids = [int(i) for batch in loader for i in batch["question_id"]]
    assert ids == [3000 + i for i in range(len(QUESTIONS))]


def test_length_grouped_setting(mixed, tiny_vicuna):
    assert eval_order.wanted(build(mixed[1], tiny_vicuna)[0])
    assert not eval_order.wanted(build(mixed[1], tiny_vicuna, length_grouped=False)[0])
    with pytest.raises(ConfigError, match=r"datasets.gqa.length_grouped must be true or false"):
        build(mixed[1], tiny_vicuna, length_grouped="yes")


def test_interrupted_grouped_evaluation_resumes_by_id(mixed, tiny_vicuna, tmp_path, monkeypatch):
    task, split = build(mixed[1], tiny_vicuna)
    clean = run(tiny_vicuna, task, split, tmp_path / "clean")
    original, calls = type(task).valid_step, []

    def counted(self, model, samples, fail_at=None):
        calls.append([str(i) for i in samples["question_id"]])
        if fail_at and len(calls) == fail_at:
            raise KeyboardInterrupt
        return original(self, model, samples)

    monkeypatch.setattr(type(task), "valid_step", lambda s, m, b: counted(s, m, b, fail_at=3))
    with pytest.raises(KeyboardInterrupt):
        run(tiny_vicuna, task, split, tmp_path / "resumed", fingerprint="fp")
    done = [i for batch in calls[:2] for i in batch]
    calls.clear()
    monkeypatch.setattr(type(task), "valid_step", lambda s, m, b: counted(s, m, b))
    assert run(tiny_vicuna, task, split, tmp_path / "resumed", fingerprint="fp") == clean
    # the two finished batches were reused by id; only the other two ran again
    assert len(calls) == 2 and not set(done) & {i for batch in calls for i in batch}

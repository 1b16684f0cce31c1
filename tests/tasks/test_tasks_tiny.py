"""Every task's valid_step on the real tiny models (tiny_vicuna, tiny_flant5).

The tasks must hand the model the prompts, generation settings, candidates and the
per-family append_eos of the protocol (docs/protocol.md): each result is checked against a direct
call of the model's own API with those inputs.
"""
import pytest
import torch

import lavis_ib
from lavis_ib import registry
from lavis_ib.common.config import compose_dataset
from lavis_ib.tasks.metrics.rank import binary_probability, ranks_of_targets

FAMILY = {"tiny_vicuna": "vicuna", "tiny_flant5": "flant5"}
SHORT = {"num_beams": 2, "max_length": 4, "min_length": 1,
         "length_penalty": {"vicuna": 0, "flant5": -1}}


@pytest.fixture(scope="module", params=sorted(FAMILY))
def model(request):
    torch.manual_seed(0)
    m = lavis_ib.load_model("instructblip", request.param, is_eval=True)
    m.test_family = FAMILY[request.param]
    return m


def task(kind, name, **cfg):
    """The task of dataset `name` from its composed entry (defaults < `cfg`)."""
    return registry.get_task_class(kind).for_dataset(
        name, compose_dataset(name, {"task": kind, **cfg}))


def images(n, video=False):
    g = torch.Generator().manual_seed(n)
    return torch.randn((n, 3, 2, 32, 32) if video else (n, 3, 32, 32), generator=g)


def eos(model):
    return model.test_family == "flant5"


def test_vqa_and_gqa_generate_as_the_model_does(model):
    t = task("vqa", "textvqa", generate=SHORT)
    batch = {"image": images(2), "question_id": [1, 2], "question": ["What?", "Where?"],
             "text_input": ["what", "where"], "ocr_tokens": [["stop", "go"], []],
             "answers": [["stop"] * 10, ["here"] * 10]}
    records = t.valid_step(model, batch)
    prompts = ["OCR tokens: stop, go. Question: what Short answer:",
               "OCR tokens: . Question: where Short answer:"]
    lp = SHORT["length_penalty"][model.test_family]
    direct = model.generate({"image": batch["image"], "prompt": prompts}, num_beams=2,
                            max_length=4, min_length=1, length_penalty=lp)
    assert [r["answer"] for r in records] == [d.strip() for d in direct]
    assert 0.0 <= t.metrics(records, None)["acc"] <= 100.0
    g = task("gqa", "gqa", generate=SHORT)
    batch.pop("ocr_tokens")
    assert len(g.valid_step(model, batch)) == 2


def test_multiple_choice_matches_direct_scoring(model):
    t = task("multiple_choice", "scienceqa")
    batch = {"image": images(2), "question_id": ["p1", "p2"], "question": ["Which?", "What?"],
             "context": ["A hint.", ""], "choices": [["red", "blue", "green"], ["yes", "no"]],
             "correct_choice_idx": [2, 0]}
    records = t.valid_step(model, batch)
    prompts = ["Context: A hint. Question: Which? Options: (a) red (b) blue (c) green. Answer:",
               "Context:  Question: What? Options: (a) yes (b) no. Answer:"]
    scores, _ = model.score_candidates({"image": batch["image"], "prompt": prompts},
                                       batch["choices"], append_eos=eos(model))
    assert [r["pred_idx"] for r in records] == [int(scores[0, :3].argmax()),
                                                int(scores[1, :2].argmax())]
    assert t.metrics(records, None)["acc"] in (0.0, 50.0, 100.0)


def test_classification_probability_from_word_sets(model):
    t = task("classification", "vsr")
    batch = {"image": images(2), "instance_id": [1, 2], "text_input": ["a cat", "a dog"],
             "label": [1, 0]}
    records = t.valid_step(model, batch)
    prompts = [f'Based on the image, is this statement true or false? "{x}" Answer:'
               for x in batch["text_input"]]
    scores, _ = model.score_candidates({"image": batch["image"], "prompt": prompts},
                                       ["yes", "true", "no", "false"], append_eos=eos(model))
    for r, row in zip(records, scores.tolist()):
        assert r["prob"] == pytest.approx(binary_probability(row[:2], row[2:]), abs=1e-6)
    m = task("classification", "hateful_memes").metrics(records, None)
    assert {"acc", "auc", "num_samples"} <= set(m)


def test_dialog_ranks_match_direct_scoring(model):
    t = task("dialog", "visdial")
    cands = [f"answer {i}" for i in range(12)]
    batch = {"image": images(2), "instance_id": ["7_0", "7_1"], "question": ["is it?", "why?"],
             "history": ["a caption.", "a caption. is it? yes"], "candidates": [cands, cands],
             "label": [4, 9]}
    records = t.valid_step(model, batch)
    prompts = [f"Dialog history: {h}\nQuestion: {q} Short answer:"
               for h, q in zip(batch["history"], batch["question"])]
    scores, _ = model.score_candidates({"image": batch["image"], "prompt": prompts},
                                       [cands, cands], append_eos=eos(model))
    assert [r["rank"] for r in records] == ranks_of_targets(scores, [4, 9])
    assert set(t.metrics(records, None)) == {"mrr", "r1", "r5", "r10", "mean_rank",
                                             "num_samples"}


def test_video_qa_rank_and_generate(model):
    vocab = ["dog", "cat", "run", "two"]
    t = task("video_qa", "msrvtt_qa")
    t.before_evaluation(model, type("D", (), {"answer_list": vocab})())
    batch = {"image": images(2, video=True), "question_id": [5, 6],
             "question": ["what is it?", "how many?"], "text_input": ["what is it", "how many"],
             "answers": [["dog"], ["two"]]}
    records = t.valid_step(model, batch)
    prompts = ["Question: what is it Short answer:", "Question: how many Short answer:"]
    scores, _ = model.score_candidates({"image": batch["image"], "prompt": prompts}, vocab,
                                       append_eos=eos(model))
    assert [r["answer"] for r in records] == [vocab[int(i)] for i in scores.argmax(-1)]
    iv = task("video_qa", "ivqa", generate=SHORT)
    assert len(iv.valid_step(model, dict(batch, answers=[["dog"] * 5, ["two"] * 5]))) == 2


def test_captioning_generates_one_caption_per_image(model):
    t = task("captioning", "flickr30k", generate={"num_beams": 1, "max_length": 5,
                                                  "min_length": 2})
    batch = {"image": images(3), "instance_id": [1, 2, 3],
             "references": [["a dog"], ["a cat"], ["a bus"]]}
    records = t.valid_step(model, batch)
    assert [r["id"] for r in records] == [1, 2, 3]
    assert all(isinstance(r["caption"], str) for r in records)

"""Every task's valid_step and metrics on a deterministic fake model (Model API)."""
import pytest
import torch

from lavis_ib import registry
from lavis_ib.common.config import compose_dataset
from lavis_ib.common.errors import ConfigError, DataError
from lavis_ib.tasks.metrics.rank import retrieval_metrics
from lavis_ib.tasks.metrics.vqa import vqa_accuracy


def task(kind, name, **cfg):
    """The task of dataset `name` from its composed entry (defaults < `cfg`)."""
    return registry.get_task_class(kind).for_dataset(
        name, compose_dataset(name, {"task": kind, **cfg}))


def images(n, video=False):
    return torch.zeros((n, 3, 4, 8, 8) if video else (n, 3, 8, 8))


def test_captioning_generate_settings_and_metrics(fake_model):
    model = fake_model(default="a dog runs on grass")
    t = task("captioning", "nocaps", metric="bleu_cider")   # METEOR: test_caption_metrics
    batch = {"image": images(2), "instance_id": [7, 8], "image_id": [70, 80],
             "references": [["a dog runs on the grass", "a dog running"], ["a red car"]]}
    records = t.valid_step(model, batch)
    kind, prompts, kwargs = model.calls[0]
    assert kind == "generate" and prompts == ["A short image description:"] * 2
    assert kwargs == {"num_beams": 5, "max_length": 80, "min_length": 10, "length_penalty": 1}
    assert [r["id"] for r in records] == [7, 8] and records[1]["image_id"] == 80
    metrics = t.metrics(records, dataset=None)
    assert set(metrics) == {"bleu4", "cider", "num_samples"}
    assert metrics["num_samples"] == 2 and metrics["cider"] > 0


def test_textvqa_prompt_fills_ocr_tokens_then_question_and_family_settings(fake_model):
    prompt = "OCR tokens: stop, 42. Question: what does the sign say Short answer:"
    model = fake_model(answers={prompt: "Stop."}, llm_family="flant5")
    t = task("vqa", "textvqa")
    batch = {"image": images(2), "question_id": [1, 2],
             "question": ["What does the sign say?", "Which number?"],
             "text_input": ["what does the sign say", "which number"],
             "ocr_tokens": [["stop", "42"], [f"t{i}" for i in range(40)]],
             "answers": [["stop"] * 10, ["42"] * 5 + ["forty two"] * 5]}
    records = t.valid_step(model, batch)
    _, prompts, kwargs = model.calls[0]
    assert prompts[0] == prompt
    assert prompts[1].startswith("OCR tokens: t0, t1,") and "t29." in prompts[1]
    assert "t30" not in prompts[1]                       # the first 30 OCR tokens only
    assert kwargs["length_penalty"] == -1 and kwargs["max_length"] == 10   # FlanT5 value
    assert records[0]["answer"] == "Stop." and records[1]["answer"] == "no idea"
    acc = t.metrics(records, None)["acc"]
    assert acc == pytest.approx(100 * (vqa_accuracy("Stop.", ["stop"] * 10) + 0) / 2)
    # vicuna gets its own length penalty
    model = fake_model(llm_family="vicuna")
    t.valid_step(model, batch)
    assert model.calls[0][2]["length_penalty"] == 0


def test_vqa_rank_over_answer_list(fake_model):
    model = fake_model(scores={"blue": 0.0})
    # an entry without build_info: the vocabulary can only come from before_evaluation
    t = registry.get_task_class("vqa").for_dataset(
        "ok_vqa", {"inference": "rank", "candidates": "answer_list"})
    batch = {"image": images(1), "question_id": ["q1"], "question": ["Sky colour?"],
             "text_input": ["sky colour"], "answers": [["blue"] * 10]}
    with pytest.raises(ConfigError, match="before_evaluation"):
        t.valid_step(model, batch)
    t.before_evaluation(model, type("D", (), {"answer_list": ["red", "blue", "green"]})())
    records = t.valid_step(model, batch)
    assert records[0]["answer"] == "blue"
    assert model.calls[-1][2] == {"append_eos": False, "candidates": [["red", "blue", "green"]]}
    assert t.metrics(records, None)["acc"] == 100.0


def test_gqa_exact_match(fake_model):
    model = fake_model(default="The table")
    t = task("gqa", "gqa")
    batch = {"image": images(2), "question_id": [1, 2], "question": ["a", "b"],
             "text_input": ["a", "b"], "answers": [["table"], ["chair"]]}
    assert t.metrics(t.valid_step(model, batch), None)["acc"] == 50.0


def test_aokvqa_direct_answer_metric(fake_model):
    t = task("vqa", "aok_vqa")
    batch = {"image": images(1), "question_id": [1], "question": ["how many"],
             "text_input": ["how many"], "answers": [["2", "2", "3", "4"]]}
    assert t.metrics(t.valid_step(fake_model(default="2"), batch), None)["acc"] == \
        pytest.approx(200 / 3)
    # raw strings, as A-OKVQA's scorer and LAVIS compare them: "two" is not "2"
    assert t.metrics(t.valid_step(fake_model(default="two"), batch), None)["acc"] == 0.0


def test_multiple_choice_ranks_options_with_letter_labels(fake_model):
    model = fake_model(scores={"mammal": 0.0, "9": 0.0}, llm_family="flant5")
    t = task("multiple_choice", "scienceqa")
    batch = {"image": images(2), "question_id": [10, 11],
             "question": ["Which is a whale?", "What is 4+5?"],
             "context": ["Whales live in the sea.", ""],
             "choices": [["fish", "mammal"], ["8", "9", "10"]],
             "correct_choice_idx": [1, 0]}
    records = t.valid_step(model, batch)
    _, prompts, kwargs = model.calls[0]
    assert prompts[0] == ("Context: Whales live in the sea. Question: Which is a whale? "
                          "Options: (a) fish (b) mammal. Answer:")
    assert prompts[1] == "Context:  Question: What is 4+5? Options: (a) 8 (b) 9 (c) 10. Answer:"
    assert kwargs["append_eos"] is True                          # FlanT5 scores with EOS
    assert kwargs["candidates"] == [["fish", "mammal"], ["8", "9", "10"]]
    assert [r["pred_idx"] for r in records] == [1, 1]
    assert t.metrics(records, None)["acc"] == 50.0
    # IconQA: two placeholders take question then options
    t = task("multiple_choice", "iconqa")
    model = fake_model()
    t.valid_step(model, batch)
    assert model.calls[0][1][0] == ("Question: Which is a whale? Options: (a) fish "
                                    "(b) mammal. Short answer:")
    assert model.calls[0][2]["append_eos"] is False               # Vicuna scores without EOS


def test_classification_word_sets_probability_and_auc(fake_model):
    import math
    scores = {"yes": math.log(0.6), "no": math.log(0.2), "true": math.log(0.1),
              "false": math.log(0.1)}
    model = fake_model(scores=scores, eos_penalty=0.0)
    t = task("classification", "vsr")
    batch = {"image": images(2), "instance_id": ["a", "b"],
             "text_input": ["the cat is on the mat", "the dog is under the car"],
             "label": [1, 0]}
    records = t.valid_step(model, batch)
    assert model.calls[0][1][0] == ('Based on the image, is this statement true or false? '
                                    '"the cat is on the mat" Answer:')
    assert model.calls[0][2]["candidates"] == [["yes", "true", "no", "false"]] * 2
    assert records[0]["prob"] == pytest.approx(0.7 / 1.0)
    assert [r["pred"] for r in records] == [1, 1]
    m = t.metrics(records, None)
    assert m["acc"] == 50.0 and m["auc"] == 50.0                 # equal probabilities
    hm = task("classification", "hateful_memes")
    records = hm.valid_step(fake_model(scores=scores), batch)
    assert records[0]["prob"] == pytest.approx(0.75)             # {yes} vs {no}
    assert "auc" not in hm.metrics(records[:1], None)            # one class: AUC undefined


def test_dialog_ranks_the_rounds_candidates(fake_model):
    cands = [f"answer {i}" for i in range(100)]
    model = fake_model(scores={"answer 3": 0.0, "answer 0": -0.5})
    t = task("dialog", "visdial")
    batch = {"image": images(3), "instance_id": ["1_0", "1_1", "2_0"],
             "question": ["is it sunny?", "any people?", "color?"],
             "history": ["a beach. ", "a beach. is it sunny? yes", "a car. "],
             "candidates": [cands] * 3, "label": [3, 0, 50]}
    records = t.valid_step(model, batch)
    assert model.calls[0][1][1] == ("Dialog history: a beach. is it sunny? yes\n"
                                    "Question: any people? Short answer:")
    # "answer 50": 10 better (answer 3, answer 0, the 8 other one-digit answers), 40 tied before it
    assert [r["rank"] for r in records] == [1, 2, 51]
    assert t.metrics(records, None) == pytest.approx(
        {**retrieval_metrics([1, 2, 51]), "num_samples": 3})
    bad = dict(batch, label=[3, 0, 100])
    with pytest.raises(DataError, match="label 100"):
        t.valid_step(model, bad)


def test_video_qa_rank_and_ivqa_generation(fake_model):
    model = fake_model(scores={"play": 0.0})
    t = task("video_qa", "msvd_qa")
    t.before_evaluation(model, type("D", (), {"answer_list": ["run", "play", "eat"]})())
    batch = {"image": images(2, video=True), "question_id": [1, 2],
             "question": ["what do they do?", "what is eaten?"],
             "text_input": ["what do they do", "what is eaten"],
             "answers": [["play"], ["eat"]]}
    records = t.valid_step(model, batch)
    assert model.calls[0][1][0] == "Question: what do they do Short answer:"
    assert t.metrics(records, None)["acc"] == 50.0
    with pytest.raises(DataError, match="video"):
        t.valid_step(model, dict(batch, image=images(2)))
    iv = task("video_qa", "ivqa")
    batch["answers"] = [["dog", "dog", "puppy", "cat", "x"], ["dog", "a", "b", "c", "d"]]
    records = iv.valid_step(fake_model(default="a dog"), batch)
    assert iv.metrics(records, None)["acc"] == pytest.approx(75.0)


def test_missing_sample_key_names_it(fake_model):
    t = task("vqa", "textvqa")
    batch = {"image": images(1), "question_id": [1], "question": ["q"], "text_input": ["q"],
             "answers": [["a"]]}
    with pytest.raises(DataError, match="ocr_tokens"):
        t.valid_step(fake_model(), batch)
    with pytest.raises(DataError, match="no predictions"):
        t.metrics([], None)


def test_split_without_answers_gives_predictions_only(fake_model):
    t = task("vqa", "vizwiz_vqa")
    batch = {"image": images(2), "question_id": [1, 2], "question": ["a", "b"],
             "text_input": ["a", "b"], "answers": [[], []]}
    records = t.valid_step(fake_model(), batch)
    assert t.metrics(records, None) == {"num_samples": 2, "num_scored": 0}
    records[0]["answers"] = ["x"]
    with pytest.raises(DataError, match="1 of 2 samples have no answers"):
        t.metrics(records, None)


def test_answer_list_read_through_the_builder_without_the_hook(fixture_root, fake_model):
    """An evaluation loop that never calls before_evaluation still ranks the vocabulary."""
    from omegaconf import OmegaConf

    overrides = fixture_root.overrides["msvd_qa"]
    builder = registry.get_builder_class("msvd_qa")
    default = OmegaConf.load(builder.default_config_path("default")).datasets.msvd_qa
    cfg = OmegaConf.merge(default, overrides)
    t = registry.get_task_class("video_qa").for_dataset("msvd_qa", cfg)
    vocab = builder(cfg).build_datasets()["test"].answer_list
    assert t.rank_candidates() == [str(a) for a in vocab] and len(vocab) >= 2

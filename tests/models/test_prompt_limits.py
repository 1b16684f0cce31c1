"""Prompt limits per entry point (`models.generation.PROMPT_LIMITS`): the Python API,
`lavis-ib predict` and evaluation cut an over-limit prompt from the left and count it;
`lavis-ib serve` refuses it (tests/web/test_serve_limits.py). FlanT5 has no context limit,
so its limit is `max_prompt_tokens`, a default above every shipped evaluation prompt.
The cut is checked against transformers fed the kept tokens."""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import torch
import yaml

from lavis_ib.models import generation
from lavis_ib.models.generation import (CUT, CUT_HISTORY, ENCODER_DECODER_MAX_PROMPT_TOKENS,
                                        PROMPT_LIMITS, REFUSE, prompt_refusal)
from tests.models.test_hf_parity import _images
from tests.models.test_inference_prompts import (NEW, _hf_greedy, _hf_score,
                                                 visdial_prompt)

LIMIT = 40   # a lowered max_prompt_tokens, so a short prompt is over it


def test_each_entry_point_has_its_rule():
    assert {k: v.over_limit for k, v in PROMPT_LIMITS.items()} == {
        "api": CUT, "predict": CUT, "evaluate": CUT, "serve": REFUSE, "chat": CUT_HISTORY}
    assert PROMPT_LIMITS["serve"].max_chars == generation.SERVE_MAX_PROMPT_CHARS
    assert all(PROMPT_LIMITS[k].max_chars is None for k in ("api", "predict", "evaluate"))


def test_refusal_counts_characters_before_tokens():
    def no_tokenizing(text):
        raise AssertionError("a prompt over the character limit was tokenized")

    why = prompt_refusal("x" * 1_000_000, 2000, no_tokenizing, 10, "this server", "the model")
    assert why == ("Prompt: 1,000,000 characters; this server takes at most 2,000. "
                   "Shorten it.")
    assert prompt_refusal("a b c", 2000, lambda t: len(t.split()), 2, "s", "the model") == \
        "Prompt: 3 tokens; the model reads at most 2. Shorten it."
    assert prompt_refusal("a b", 2000, lambda t: len(t.split()), 2, "s", "m") is None


@pytest.fixture
def t5(our_models, monkeypatch):
    """The tiny InstructBLIP-FlanT5 with `max_prompt_tokens` lowered to LIMIT."""
    model = our_models["t5"][0]
    assert model.adapter.max_prompt_tokens == ENCODER_DECODER_MAX_PROMPT_TOKENS
    monkeypatch.setattr(model.adapter, "max_prompt_tokens", LIMIT)
    return model


def test_api_cuts_a_flant5_prompt_from_the_left_counted_and_logged(t5, hf_models, caplog,
                                                                   monkeypatch):
    hf, processor = hf_models["t5"]
    prompt = visdial_prompt(3)
    full = processor.tokenizer(prompt).input_ids
    assert len(full) > LIMIT
    kept = full[len(full) - LIMIT:]            # the end (the question and EOS) is kept
    assert kept[-1] == processor.tokenizer.eos_token_id
    image = _images(1, seed=7)
    monkeypatch.setattr(t5.adapter, "num_truncated", 0)   # a model logs its first cut
    with caplog.at_level(logging.WARNING, logger="lavis_ib.models.llm.base"):
        text = t5.generate({"image": image, "prompt": prompt}, num_beams=1, max_length=NEW,
                           min_length=1, repetition_penalty=1.0)[0]
    assert text == _hf_greedy("t5", hf, processor, image[0], prompt, kept)
    assert f"a {len(full)}-token prompt is over the {LIMIT} tokens max_prompt_tokens" \
        in caplog.text
    cand = processor.tokenizer("a black cat", add_special_tokens=False).input_ids
    cand = cand + [processor.tokenizer.eos_token_id]
    scores, _ = t5.score_candidates({"image": image, "prompt": [prompt]}, ["a black cat"],
                                    append_eos=True)
    ref = _hf_score("t5", hf, processor, image[0], prompt, kept, cand)
    assert abs(scores[0, 0].item() - ref) < 1e-3
    assert t5.inference_counts()["num_truncated"] == 2


def test_a_prompt_at_the_limit_is_not_cut(t5, hf_models):
    hf, processor = hf_models["t5"]
    prompt = "what colour is the cat in the picture?"
    full = processor.tokenizer(prompt).input_ids
    assert len(full) <= LIMIT
    before = t5.inference_counts()["num_truncated"]
    image = _images(1, seed=8)
    text = t5.generate({"image": image, "prompt": prompt}, num_beams=1, max_length=NEW,
                       min_length=1, repetition_penalty=1.0)[0]
    assert text == _hf_greedy("t5", hf, processor, image[0], prompt, full)
    assert t5.inference_counts()["num_truncated"] == before


class _GenerateTask:
    """The evaluation loop's view of a task: generation on each sample's own prompt."""

    def before_evaluation(self, model, dataset):
        pass

    def valid_step(self, model, samples):
        answers = model.generate({"image": samples["image"], "prompt": samples["prompt"]},
                                 num_beams=1, max_length=2)
        return [{"id": i, "answer": a} for i, a in zip(samples["instance_id"], answers)]

    def metrics(self, records, dataset):
        return {"answered": len(records)}


class _Prompts(torch.utils.data.Dataset):
    def __init__(self, prompts):
        self.prompts = prompts

    def __len__(self):
        return len(self.prompts)

    def __getitem__(self, i):
        return {"image": _images(1, seed=i)[0], "prompt": self.prompts[i], "instance_id": i}

    def collater(self, batch):
        return {"image": torch.stack([b["image"] for b in batch]),
                "prompt": [b["prompt"] for b in batch],
                "instance_id": [b["instance_id"] for b in batch]}


def test_evaluation_cuts_and_counts_in_metrics(t5, tmp_path, caplog):
    from lavis_ib.runners.eval_loop import evaluate_split

    data = _Prompts([visdial_prompt(3), "a short one?", visdial_prompt(4)])
    with caplog.at_level(logging.WARNING, logger="lavis_ib.runners.eval_loop"):
        metrics = evaluate_split(t5, _GenerateTask(), data, "toy", "val", batch_size=2,
                                 num_workers=0, device=torch.device("cpu"),
                                 out_dir=str(tmp_path), fingerprint="fp")
    assert metrics["num_truncated"] == 2
    with open(tmp_path / "metrics.json") as f:
        assert json.load(f)["num_truncated"] == 2
    assert "2 prompts were cut from the left" in caplog.text


def test_predict_cuts_and_logs_the_count(monkeypatch, tmp_path, caplog):
    from lavis_ib.cli.predict import main
    from lavis_ib.models.llm import encoder_decoder
    from lavis_ib.testing.fixtures import write_image

    # the model predict loads gets the lowered limit (no config key sets it)
    monkeypatch.setattr(encoder_decoder, "ENCODER_DECODER_MAX_PROMPT_TOKENS", LIMIT)
    image = write_image(str(tmp_path / "a.png"), np.random.default_rng(0), size=32)
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"image": image, "prompt": p}) + "\n"
                              for p in (visdial_prompt(3), "short?", visdial_prompt(2))))
    with caplog.at_level(logging.WARNING, logger="lavis_ib.predict.run"):
        assert main(["--model", "instructblip:tiny_flant5", "--input", str(inputs),
                     "--num-beams", "1", "--max-length", "2", "--no-progress",
                     "--output", str(tmp_path / "out.jsonl")]) == 0
    assert "2 prompt(s) cut from the start to the model's prompt limit" in caplog.text
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 3


# -- FlanT5's default is above every shipped evaluation prompt -----------------------------
#: the longest value each prompt field is taken to hold, in characters (bounds assumed for
#: the datasets, which are not available offline; OCR tokens are capped at 30 in code)
FIELD_BOUNDS = {
    "ocr_tokens": ", ".join(["x" * 30] * 30),             # 30 OCR tokens of 30 characters
    "question": "q" * 300, "raw_question": "q" * 300, "text": "t" * 300,
    "context": "c" * 1000,                                # a ScienceQA hint
    "options": " ".join(f"({chr(97 + i)}) " + "o" * 80 for i in range(5)),
    "history": "h" * 1400,                                # VisDial: caption and 10 rounds
}


def _shipped_evaluation_prompts():
    """(file, dataset, filled prompt) of every evaluation prompt in the shipped configs,
    each `{}` filled with its field's bound (the task's field order, last n fields)."""
    from lavis_ib.common.paths import package_path
    from lavis_ib.common.registry import registry
    import lavis_ib.tasks.builtin  # noqa: F401  (registers the tasks)

    root = package_path("configs")
    defaults, files = {}, []
    for folder, _, names in os.walk(root):
        for name in sorted(n for n in names if n.endswith(".yaml")):
            with open(os.path.join(folder, name)) as f:
                files.append((os.path.relpath(os.path.join(folder, name), root),
                              yaml.safe_load(f) or {}))
    for path, data in files:
        if path.startswith("datasets") and isinstance(data.get("datasets"), dict):
            defaults.update(data["datasets"])
    out = []
    for path, data in files:
        for dataset, entry in (data.get("datasets") or {}).items():
            if not isinstance(entry, dict) or "prompt" not in entry:
                continue
            task = entry.get("task") or (defaults.get(dataset) or {}).get("task")
            fields_all = registry.get_task_class(task).PROMPT_FIELDS
            prompts = entry["prompt"]
            for prompt in (prompts.values() if isinstance(prompts, dict) else [prompts]):
                n = prompt.count("{}")
                fields = entry.get("prompt_fields") or (fields_all[len(fields_all) - n:]
                                                        if n else ())
                values = iter(FIELD_BOUNDS[f] for f in fields)
                out.append((path, dataset, "".join(
                    part + (next(values) if k < n else "")
                    for k, part in enumerate(prompt.split("{}")))))
    return out


def test_flant5_default_is_above_every_shipped_evaluation_prompt():
    from lavis_ib.testing.tiny_assets import tiny_t5_tokenizer

    prompts = _shipped_evaluation_prompts()
    assert len(prompts) >= 20 and any("Context:" in p for _, _, p in prompts)
    # one token per character: no T5 tokenizer cuts a text into more pieces than this one
    tokenizer = tiny_t5_tokenizer()
    counts = {(path, ds): len(tokenizer(p).input_ids) for path, ds, p in prompts}
    longest = max(counts, key=counts.get)
    assert counts[longest] < ENCODER_DECODER_MAX_PROMPT_TOKENS, (longest, counts[longest])
    assert longest[1] == "scienceqa", longest   # as generation.py's comment says

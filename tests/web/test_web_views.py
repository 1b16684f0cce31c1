"""The research views of the web demo, without a browser, each against the Python API:
the ranking view (per-token log-probabilities against `score_candidates`, readable
probabilities, bars from zero, CSV), the attention view (against `qformer_attention`), two
models compared, the sampled video frames, the example image and prompts, the model panel,
and answers that show their progress."""
import csv
import math
import os

import pytest
import torch
from PIL import Image

from lavis_ib.web.model import GENERATION_DEFAULTS, rank_for_page

PROMPT = "What is in the picture?"
CANDIDATES = ["a red bus", "two dogs", "yes"]


def image_batch(vis, path):
    return vis["eval"](Image.open(path).convert("RGB")).unsqueeze(0)


def api_scores(model, vis, path, candidates=CANDIDATES):
    scores, _ = model.score_candidates({"image": image_batch(vis, path), "prompt": PROMPT},
                                       candidates)
    return dict(zip(candidates, scores[0].tolist()))


def settings_list(**changes):
    d = {**GENERATION_DEFAULTS, **changes}
    return [d["num_beams"], d["max_length"], d["min_length"], d["use_nucleus_sampling"],
            d["top_p"], d["temperature"], d["repetition_penalty"]]


def test_ranking_tokens_add_up_to_the_models_scores(demo, tiny_model, media):
    """Per-token values come from the adapter's plain scorer, the scores from the trie
    scorer of `score_candidates`: two paths, one sum. The tokens are the tokenizer's own
    split of each candidate, EOS last where the model's default appends it (Vicuna's
    does not, as in LAVIS)."""
    model, vis = tiny_model
    ranking = demo.rank(media["image"], None, PROMPT, ", ".join(CANDIDATES))
    expected = api_scores(model, vis, media["image"])
    assert ranking.candidates == sorted(CANDIDATES, key=lambda c: -expected[c])
    tok = model.adapter.tokenizer
    for cand, score, tokens, n in zip(ranking.candidates, ranking.scores, ranking.tokens,
                                      ranking.token_counts):
        assert score == pytest.approx(expected[cand], abs=1e-5)
        assert sum(lp for _, lp in tokens) == pytest.approx(expected[cand], abs=1e-4)
        eos = [tok.eos_token_id] if model.default_append_eos else []
        ids = tok(cand, add_special_tokens=False).input_ids + eos
        assert [t for t, _ in tokens] == tok.convert_ids_to_tokens(ids) and n == len(ids)
        assert all(lp <= 0 for _, lp in tokens)
    shares = [math.exp(expected[c]) for c in ranking.candidates]
    assert ranking.shares == pytest.approx([s / sum(shares) for s in shares], rel=1e-6)


def test_length_normalised_order_is_by_mean_per_token(demo, tiny_model, media):
    model, vis = tiny_model
    ranking = demo.rank(media["image"], None, PROMPT, ", ".join(CANDIDATES), "mean per token")
    expected = api_scores(model, vis, media["image"])
    tok = model.adapter.tokenizer
    eos = 1 if model.default_append_eos else 0
    mean = {c: expected[c] / (len(tok(c, add_special_tokens=False).input_ids) + eos)
            for c in CANDIDATES}
    assert ranking.candidates == sorted(CANDIDATES, key=lambda c: -mean[c])
    assert ranking.shown == pytest.approx([mean[c] for c in ranking.candidates], abs=1e-5)


def test_probabilities_are_readable_and_the_bars_start_at_zero(demo, media):
    from lavis_ib.web.ranking import probability_text

    assert [probability_text(p) for p in (0.99964, 0.03124, 4.5612e-07, 0.0)] == [
        "0.9996", "0.0312", "4.56e-07", "0"]
    ranking = demo.rank(media["image"], None, PROMPT, ", ".join(CANDIDATES))
    table = ranking.as_markdown()
    assert "0.0%" not in table and "100.0%" not in table
    for p in ranking.shares[1:]:          # the tiny model's runners-up are far below 1e-3
        assert probability_text(p) in table and "e-" in probability_text(p)
    ax = ranking.figure().axes[0]
    bars = ax.patches
    assert len(bars) == len(CANDIDATES)
    for bar, score in zip(bars, ranking.scores):
        assert bar.get_x() == 0.0 and bar.get_width() == pytest.approx(score)
    assert ax.get_xlim()[1] == 0.0 and ax.get_xlim()[0] <= min(ranking.scores)


def test_page_ranking_outputs_and_csv(demo, tiny_model, media, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    model, vis = tiny_model
    chart, table, tokens, path, status = rank_for_page(demo, media["image"], None, PROMPT,
                                                       ", ".join(CANDIDATES))
    expected = api_scores(model, vis, media["image"])
    best = max(expected, key=expected.get)
    assert status == f"Ranked 3 candidates by sum; best: {best}."
    assert f"| 1 | {best} |" in table and chart is not None
    assert os.path.dirname(path) == str(tmp_path)
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["candidate"] for r in rows] == sorted(CANDIDATES, key=lambda c: -expected[c])
    for row in rows:
        assert float(row["log_probability"]) == pytest.approx(expected[row["candidate"]], abs=1e-5)
        token_lps = [float(v) for v in row["token_log_probabilities"].split()]
        assert sum(token_lps) == pytest.approx(float(row["log_probability"]), abs=1e-4)
        assert float(row["probability"]) == math.exp(float(row["log_probability"]))
    assert all(f"**{c}**" in tokens for c in CANDIDATES)
    chart, table, tokens, path, status = rank_for_page(demo, media["image"], None, PROMPT, " , ")
    assert (chart, table, tokens, path) == (None, "", "", None) and "at least one" in status


def test_attention_view_is_qformer_attention(demo, tiny_model, media):
    from lavis_ib.web.model import attention_for_page

    model, vis = tiny_model
    second = "Where is the text?"
    pair, frames = demo.attention(media["image"], None, PROMPT, second)
    samples = {"image": image_batch(vis, media["image"])}
    for text, shown in zip((PROMPT, second), pair.maps):
        expected = model.qformer_attention(samples, prompt=text).heatmap()[0]
        torch.testing.assert_close(shown, expected)
    grid = model.vision_spec.image_size // model.vision_spec.patch_size
    assert pair.maps[0].shape == (1, grid, grid) and frames.shape == (1, 32, 32, 3)
    a, b = (m / m.sum() for m in pair.maps)
    assert pair.difference == pytest.approx(float(0.5 * (a - b).abs().sum()), abs=1e-7)
    layer = model.qformer_attention(samples, prompt=PROMPT).layers[-1]
    one, _ = demo.attention(media["image"], None, PROMPT, second, layer)
    torch.testing.assert_close(one.maps[0], model.qformer_attention(
        samples, prompt=PROMPT).heatmap(layer)[0])
    first_img, second_img, status = attention_for_page(demo, media["image"], None, PROMPT, second)
    assert first_img.size == second_img.size == (320, 320)
    assert f"difference between the maps {pair.difference:.3g}" in status
    _, _, status = attention_for_page(demo, media["image"], None, PROMPT, "  ")
    assert "Type a second instruction" in status


def test_compared_models_answer_as_each_model_does(demo, compare_demo, tiny_model,
                                                   compare_model, media, tmp_path, monkeypatch):
    """Generation, ranking and attention of two models side by side: each column is that
    model's API result; BLIP-2's Q-Former does not read the instruction, so its two maps
    are the same (difference 0) while InstructBLIP's are its own."""
    from lavis_ib.web.callbacks import (attention_compare_for_page, generate_live_for_page,
                                        rank_compare_for_page)

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))   # where the page's CSVs go
    demos = [demo, compare_demo]
    *answers, status = list(generate_live_for_page(demos, media["image"], None, PROMPT,
                                                   *settings_list(), 0))[-1]
    for (model, vis), answer in zip((tiny_model, compare_model), answers):
        expected = model.generate({"image": image_batch(vis, media["image"]), "prompt": PROMPT},
                                  **GENERATION_DEFAULTS)[0]
        assert answer == expected
    assert status.count("done in") == 2 and "blip2_opt:tiny_opt: done" in status
    out = rank_compare_for_page(demos, media["image"], None, PROMPT, "yes, no")
    for k, (model, vis) in enumerate((tiny_model, compare_model)):
        expected = api_scores(model, vis, media["image"], ["yes", "no"])
        assert f"{expected['yes']:.4f}" in out[4 * k + 1]
    *_, status = attention_compare_for_page(demos, media["image"], None, PROMPT, "Any text?")
    pair, _ = compare_demo.attention(media["image"], None, PROMPT, "Any text?")
    assert pair.difference == 0.0
    assert "blip2_opt:tiny_opt: difference between the maps 0 " in status


def test_progress_then_the_final_answer(demo, tiny_model, media):
    """With beams, the page hears the elapsed time while the model works, then the answer
    the API gives, with tokens and tokens/s."""
    from lavis_ib.web import live
    from lavis_ib.web.callbacks import generate_live_for_page

    model, vis = tiny_model
    steps = list(generate_live_for_page([demo], media["image"], None, PROMPT,
                                        *settings_list(num_beams=3, max_length=40), 0))
    expected = model.generate({"image": image_batch(vis, media["image"]), "prompt": PROMPT},
                              **{**GENERATION_DEFAULTS, "num_beams": 3, "max_length": 40})[0]
    answer, status = steps[-1]
    assert answer == expected
    tokens = len(model.adapter.tokenizer(expected, add_special_tokens=False).input_ids)
    assert f"{tokens} tokens" in status and "tokens/s (3 beams: shown when done)" in status
    progress = list(live.live_text(len, None, lambda: (__import__("time").sleep(0.3), "ab")[1],
                                   beams=2, poll_s=0.05))
    assert progress[-1].done and progress[-1].text == "ab" and progress[-1].tokens == 2
    assert len(progress) > 2 and all(not p.done and p.text == "" for p in progress[:-1])
    assert "generating with 2 beam(s)" in progress[0].line("m")

    def failing():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        list(live.live_text(len, None, failing))


def test_video_shows_the_frames_the_model_reads(demo, tiny_model, media):
    """The gallery's frames are the video processor's samples: processed, they are the
    model's input (what `video_eval` makes of the file)."""
    import numpy as np

    from lavis_ib.web.model import frames_for_page
    from tests.web.test_web_app import video_batch

    model, vis = tiny_model
    gallery, status = frames_for_page(demo, media["video"])
    assert [caption for _, caption in gallery] == [f"frame {i}" for i in range(1, 5)]
    stacked = torch.from_numpy(np.stack([np.asarray(f) for f, _ in gallery])).permute(0, 3, 1, 2)
    processed = vis["eval"]  # the image processor's size and normalisation, as predict uses
    from lavis_ib.processors.media_files import video_processor_like

    torch.testing.assert_close(video_processor_like(processed)(stacked)[None],
                               video_batch(vis, media["video"]))
    assert status.startswith("Video loaded: 4 frames sampled")
    gallery, status = frames_for_page(demo, media["broken"])
    assert gallery is None and "video 'broken.png' cannot be decoded" in status


def test_example_image_and_prompts(tmp_path, monkeypatch):
    import matplotlib

    from lavis_ib.web.callbacks import example_image_for_page
    from lavis_ib.web.examples import EXAMPLES, example_rows

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    path, status = example_image_for_page()
    original = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    with open(path, "rb") as copy, open(original, "rb") as source:
        assert copy.read() == source.read()
    assert path.startswith(str(tmp_path)) and "public domain" in status
    families = {row[0] for row in example_rows()}
    assert {"Captioning", "Visual question answering", "Video question answering",
            "Classification by ranking"} <= families == set(EXAMPLES)
    assert all(row[1].strip() for row in example_rows())


def test_model_panel_states_what_is_loaded(demo, tiny_model):
    import copy

    from lavis_ib.models.llm.lora import add_lora
    from lavis_ib.models.llm.quantization import quantize_llm
    from lavis_ib.web.model import DemoModel
    from lavis_ib.web.model_info import model_facts

    model, vis = tiny_model
    facts = dict(model_facts(demo))
    config = model.llm.config
    assert facts["context length"] == f"{config.max_position_embeddings} tokens"
    assert facts["name"] == "`instructblip:tiny_vicuna`" and facts["type"] == "InstructBLIP"
    assert facts["device"] == "cpu" and facts["precision"].count("float32") == 3
    n = sum(p.numel() for p in model.parameters())
    assert facts["parameters"].startswith(f"{n:,} ")
    assert facts["quantisation"] == "none" and facts["LoRA"] == "none"
    assert f"max length up to {demo.max_length_limit} tokens" in facts["page limits"]
    assert demo.max_length_limit == config.max_position_embeddings - model.query_tokens.shape[1]
    changed = copy.deepcopy(model)
    add_lora(changed, {"r": 4})
    quantize_llm(changed, "int8_weight_only")
    facts = dict(model_facts(DemoModel(changed, vis, "changed")))
    assert facts["LoRA"].startswith("alpha=") and "r=4" in facts["LoRA"]
    assert facts["quantisation"].startswith("int8_weight_only: ")


def test_token_log_probabilities_of_an_encoder_decoder_llm(tiny_flant5):
    """FlanT5 (EOS appended by its default): the per-token values of the decoder add up to
    `score_candidates`' scores too."""
    from lavis_ib.web.ranking import token_log_probabilities

    model = tiny_flant5.eval()
    size = model.vision_spec.image_size
    samples = {"image": torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(3)),
               "prompt": PROMPT}
    with torch.inference_mode():
        scores, _ = model.score_candidates(samples, CANDIDATES)
        tokens = token_log_probabilities(model, samples, CANDIDATES, model.default_append_eos)
    tok = model.adapter.tokenizer
    for cand, score, toks in zip(CANDIDATES, scores[0].tolist(), tokens):
        assert sum(lp for _, lp in toks) == pytest.approx(score, abs=1e-4)
        ids = tok(cand, add_special_tokens=False).input_ids + [tok.eos_token_id]
        assert [t for t, _ in toks] == tok.convert_ids_to_tokens(ids)

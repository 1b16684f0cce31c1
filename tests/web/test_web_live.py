"""Streaming and chat on the web demo, without a browser: with one beam the page's text
grows piece by piece and ends equal to the API's non-streamed answer (greedy, and sampled
with a seed); a chat turn's reply is `model.chat` with the history so far; a history over
the prompt limit loses its oldest turns and the status says how many."""
import pytest
import torch
from PIL import Image

from lavis_ib.web.callbacks import chat_live_for_page, generate_live_for_page
from lavis_ib.web.model import GENERATION_DEFAULTS

PROMPT = "What is in the picture?"


def settings_list(**changes):
    d = {**GENERATION_DEFAULTS, **changes}
    return [d["num_beams"], d["max_length"], d["min_length"], d["use_nucleus_sampling"],
            d["top_p"], d["temperature"], d["repetition_penalty"]]


def image_batch(vis, path):
    return vis["eval"](Image.open(path).convert("RGB")).unsqueeze(0)


@pytest.mark.parametrize("changes,seed", [
    ({"num_beams": 1, "max_length": 24}, 0),
    ({"num_beams": 1, "max_length": 24, "use_nucleus_sampling": True, "top_p": 0.9,
      "temperature": 1.5}, 11)])
def test_streamed_answer_equals_the_apis(demo, tiny_model, media, changes, seed):
    model, vis = tiny_model
    assert demo.can_stream("generate") and demo.can_stream("chat")
    steps = list(generate_live_for_page([demo], media["image"], None, PROMPT,
                                        *settings_list(**changes), seed))
    if changes.get("use_nucleus_sampling"):
        torch.manual_seed(seed)
    expected = model.generate({"image": image_batch(vis, media["image"]), "prompt": PROMPT},
                              **{**GENERATION_DEFAULTS, **changes})[0]
    answer, status = steps[-1]
    assert answer == expected and expected
    texts = [text for text, _ in steps]
    assert len(set(texts)) > 2, "the text should arrive in pieces"
    assert all(expected.startswith(t.strip()) for t in texts[:-1])
    assert all("generating…" in line for _, line in steps[:-2])
    tokens = len(model.adapter.tokenizer(expected, add_special_tokens=False).input_ids)
    assert status.startswith("Generated: done in") and f"{tokens} tokens" in status
    assert status.endswith("tokens/s (streamed).")


def test_chat_turns_are_the_apis_chat(demo, tiny_model, media):
    model, vis = tiny_model
    image = image_batch(vis, media["image"])
    settings = settings_list(num_beams=1, max_length=12)
    history, messages = [], []
    for turn in ("What is in the picture?", "Is it large?"):
        steps = list(chat_live_for_page([demo], media["image"], None, turn, *settings, 0,
                                        history))
        history, box, status = steps[-1]
        messages.append({"role": "user", "content": turn})
        expected = model.chat({"image": image}, messages,
                              **{**GENERATION_DEFAULTS, "num_beams": 1, "max_length": 12})
        messages.append({"role": "assistant", "content": expected})
        assert history == messages and box == ""
        assert status.startswith("Replied: done in") and "(streamed)" in status
    # with beams: the final text, the same as the API's
    history, _, status = list(chat_live_for_page([demo], media["image"], None, "Why?",
                                                 *settings_list(num_beams=3, max_length=12),
                                                 0, history))[-1]
    expected = model.chat({"image": image}, messages + [{"role": "user", "content": "Why?"}],
                          **{**GENERATION_DEFAULTS, "num_beams": 3, "max_length": 12})
    assert history[-1] == {"role": "assistant", "content": expected}
    assert "3 beams: shown when done" in status


def test_chat_errors_keep_the_history_and_the_message(demo, media):
    before = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    history, box, status = list(chat_live_for_page([demo], None, None, "What now?",
                                                   *settings_list(num_beams=1), 0, before))[-1]
    assert history == before and box == "What now?"
    assert status == "**Error:** Upload an image or a video first."


def test_a_long_history_loses_its_oldest_turns_and_says_so(demo, tiny_model, media):
    model, _ = tiny_model
    long_turn = "Describe every object in the picture in great detail please. " * 3
    history = []
    for k in range(8):
        history += [{"role": "user", "content": f"{k}: {long_turn}"},
                    {"role": "assistant", "content": long_turn}]
    before = model.chat_counts()["turns_dropped"]
    *_, status = list(chat_live_for_page([demo], media["image"], None, "And now?",
                                         *settings_list(num_beams=1, max_length=8), 0,
                                         history))[-1]
    dropped = model.chat_counts()["turns_dropped"] - before
    assert dropped > 0
    assert f"{dropped} earlier turn(s) left out (oldest first) to fit the prompt limit." in status

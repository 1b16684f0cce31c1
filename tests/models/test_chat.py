"""`model.chat`: a one-turn chat is `generate` on its question; the LLM reads a longer
conversation in the LLaVA-Instruct format written out here as data (and as the LLaVA
training samples are built); a history over the prompt limit loses whole turns, oldest
first, counted and logged; the Q-Former reads the current question only."""
from __future__ import annotations

import logging
import re

import pytest
import torch

from lavis_ib.common.errors import LavisIbError
from lavis_ib.datasets.datasets.llava import conversation_instruction
from lavis_ib.models.components.streaming import TextStream

SETTINGS = dict(num_beams=1, max_length=12)
#: a conversation and the LLM prompt it must become (LLaVA: earlier turns as
#: "USER: q ASSISTANT: a" lines, then the current question on its own line)
MESSAGES = [
    {"role": "user", "content": "What is in the picture?"},
    {"role": "assistant", "content": "A dog on a sofa."},
    {"role": "user", "content": "What colour is the sofa?"},
    {"role": "assistant", "content": "Red."},
    {"role": "user", "content": "Is the dog asleep?"},
]
LLM_PROMPT = ("USER: What is in the picture? ASSISTANT: A dog on a sofa.\n"
              "USER: What colour is the sofa? ASSISTANT: Red.\n"
              "Is the dog asleep?")


def _image(model, seed: int = 11) -> torch.Tensor:
    size = model.vision_spec.image_size
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _spy(model, monkeypatch):
    """What the LLM adapter's `generate` receives (soft prompts, prompt rows) and the texts
    the Q-Former tokenizes, per call."""
    seen = {"prefix": [], "rows": [], "qformer": []}
    generate, qformer_tokens = model.adapter.generate, model._qformer_tokens

    def spy_generate(prefix, rows, **settings):
        seen["prefix"].append(prefix.clone())
        seen["rows"].append([list(r) for r in rows])
        return generate(prefix, rows, **settings)

    def spy_qformer(texts):
        seen["qformer"].append(list(texts))
        return qformer_tokens(texts)
    monkeypatch.setattr(model.adapter, "generate", spy_generate)
    monkeypatch.setattr(model, "_qformer_tokens", spy_qformer)
    return seen


@pytest.mark.parametrize("fixture", ["tiny_vicuna", "tiny_flant5", "tiny_opt"])
def test_one_turn_chat_is_generate_on_its_question(fixture, request):
    model = request.getfixturevalue(fixture)
    image = _image(model)
    question = "What is unusual about this image?"
    for settings in (SETTINGS, dict(num_beams=2, max_length=6), {}):
        if not settings and fixture != "tiny_opt":
            continue   # the defaults (5 beams, the fitted length) once
        answer = model.chat({"image": image}, [{"role": "user", "content": question}],
                            **settings)
        assert answer == model.generate({"image": image, "prompt": question}, **settings)[0]


@pytest.mark.parametrize("fixture", ["tiny_vicuna", "tiny_flant5"])
def test_the_llm_reads_the_llava_format_and_the_qformer_the_question(fixture, request,
                                                                      monkeypatch):
    model = request.getfixturevalue(fixture)
    image = _image(model)
    history = [(MESSAGES[i]["content"], MESSAGES[i + 1]["content"]) for i in (0, 2)]
    assert conversation_instruction(history, MESSAGES[-1]["content"]) == LLM_PROMPT
    seen = _spy(model, monkeypatch)
    answer = model.chat({"image": image}, MESSAGES, **SETTINGS)
    tokenizer = model.llm_tokenizer
    assert seen["rows"] == [[tokenizer(LLM_PROMPT).input_ids]]
    assert seen["qformer"] == [["Is the dog asleep?"]]
    # the soft prompts are the question's, which differ from the whole history's
    with torch.no_grad():
        question_prefix = model.encode(image, ["Is the dog asleep?"])
        history_prefix = model.encode(image, [LLM_PROMPT])
    assert torch.equal(seen["prefix"][0], question_prefix)
    assert not torch.allclose(question_prefix, history_prefix)
    # and the answer is what generate gives for that prompt with those soft prompts
    with torch.no_grad():
        ids = model.adapter.generate(question_prefix, [tokenizer(LLM_PROMPT).input_ids],
                                     use_nucleus_sampling=False, num_beams=1, max_length=12,
                                     min_length=1, top_p=0.9, repetition_penalty=1.5,
                                     length_penalty=1.0, num_captions=1, temperature=1.0)
    assert answer == model.adapter.decode(ids)[0]


def test_a_long_history_loses_whole_turns_oldest_first(tiny_vicuna, monkeypatch, caplog):
    model = tiny_vicuna
    tokenizer = model.llm_tokenizer
    context = model.llm.config.max_position_embeddings
    soft = model.query_tokens.shape[1]
    max_length = 32
    room = context - soft - max_length
    turns = [(f"Question {i}: what is at the position number {i} of the picture?",
              f"Answer {i}: a small object in position {i}.") for i in range(12)]
    question = "And what is in the middle?"
    messages = []
    for q, a in turns:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    messages.append({"role": "user", "content": question})

    def llava(kept):   # the LLaVA format, written out independently
        return "".join(f"USER: {q} ASSISTANT: {a}\n" for q, a in kept) + question
    dropped = next(k for k in range(len(turns) + 1)
                   if len(tokenizer(llava(turns[k:])).input_ids) <= room)
    assert 0 < dropped < len(turns), "the history must be cut, but not entirely"
    seen = _spy(model, monkeypatch)
    before, cut_before = model.chat_counts(), model.inference_counts()["num_truncated"]
    with caplog.at_level(logging.WARNING, logger="lavis_ib.models.components.inference"):
        model.chat({"image": _image(model)}, messages, num_beams=1, max_length=max_length)
    assert seen["rows"] == [[tokenizer(llava(turns[dropped:])).input_ids]]
    after = model.chat_counts()
    assert after["turns_dropped"] - before["turns_dropped"] == dropped
    assert after["chats"] - before["chats"] == 1
    assert f"{dropped} of 12 earlier turns dropped" in caplog.text
    assert model.inference_counts()["num_truncated"] == cut_before   # the question is whole


def test_chat_streams(tiny_flant5):
    image = _image(tiny_flant5)
    stream = tiny_flant5.chat({"image": image}, MESSAGES, stream=True, **SETTINGS)
    assert isinstance(stream, TextStream)
    assert "".join(stream) == tiny_flant5.chat({"image": image}, MESSAGES, **SETTINGS)
    with pytest.raises(LavisIbError, match="num_beams=1"):
        tiny_flant5.chat({"image": image}, MESSAGES, stream=True, num_beams=3)


def test_chat_about_a_video(tiny_vicuna):
    size = tiny_vicuna.vision_spec.image_size
    video = torch.randn(1, 3, 2, size, size, generator=torch.Generator().manual_seed(4))
    answer = tiny_vicuna.chat({"image": video}, MESSAGES[:1], **SETTINGS)
    assert answer == tiny_vicuna.generate({"image": video, "prompt": MESSAGES[0]["content"]},
                                          **SETTINGS)[0]


@pytest.mark.parametrize("messages, words", [
    ([], "non-empty list"),
    ("hello", "non-empty list"),
    (MESSAGES[:2], "end with the user's question"),
    ([{"role": "assistant", "content": "Hi."}], "messages[0] has role 'assistant'"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
     "messages[1] has role 'user'"),
    ([{"role": "user", "text": "a"}], "exactly 'role' and 'content'"),
    ([{"role": "user", "content": 3}], "must be a str"),
])
def test_bad_messages_get_one_line(messages, words, tiny_opt):
    with pytest.raises(LavisIbError, match=re.escape(words)) as exc:
        tiny_opt.chat({"image": _image(tiny_opt)}, messages)
    assert "\n" not in str(exc.value)


def test_bad_samples_and_settings_get_one_line(tiny_opt):
    two = torch.cat([_image(tiny_opt), _image(tiny_opt, 2)])
    for samples, settings, words in (({"image": two}, {}, "one image"),
                                     ({}, {}, "one image"),
                                     ({"image": _image(tiny_opt)}, {"beams": 2},
                                      "unknown generation settings"),
                                     ({"image": _image(tiny_opt)}, {"max_length": 8,
                                                                   "max_new_tokens": 9},
                                      "max_new_tokens=9")):
        with pytest.raises(LavisIbError, match=words) as exc:
            tiny_opt.chat(samples, MESSAGES, **settings)
        assert "\n" not in str(exc.value)

"""`generate(..., stream=True)`: text pieces from a worker thread that join to the text of
the same call without streaming (greedy and sampling, decoder-only and encoder-decoder
LLMs); a consumer that stops early ends the thread; an error in the thread reaches the
caller; beams and batches are refused with one line."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from lavis_ib.common.errors import LavisIbError
from lavis_ib.models.components.streaming import THREAD_NAME, TextStream

FAMILIES = ["tiny_vicuna", "tiny_flant5", "tiny_opt"]
PROMPT = "Describe the picture in detail."


def _samples(model, n: int = 1, seed: int = 8) -> dict:
    size = model.vision_spec.image_size
    image = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return {"image": image, "prompt": PROMPT}


def _stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME and t.is_alive()]


@pytest.mark.parametrize("fixture", FAMILIES)
def test_joined_pieces_equal_the_generated_text(fixture, request, monkeypatch):
    model = request.getfixturevalue(fixture)
    samples = _samples(model)
    counts, ids, generate = [], [], model.adapter.generate
    monkeypatch.setattr(model.adapter, "generate",
                        lambda *a, **k: ids.append(generate(*a, **k)) or ids[-1])
    for settings, seed in ((dict(num_beams=1, max_length=24), 0),
                           (dict(num_beams=1, max_length=24, min_length=24,
                                 repetition_penalty=1.3), 0),
                           (dict(do_sample=True, num_beams=1, max_new_tokens=24, top_p=0.95), 0),
                           (dict(do_sample=True, num_beams=1, max_new_tokens=24, top_k=20), 1)):
        torch.manual_seed(seed)
        stream = model.generate(samples, stream=True, **settings)
        assert isinstance(stream, TextStream)
        pieces = list(stream)
        torch.manual_seed(seed)
        (text,) = model.generate(samples, **settings)
        assert "".join(pieces) == text, (settings, pieces)
        # every generated token counted: the output row less T5's decoder start token
        assert stream.num_tokens == ids[-1].shape[1] - int(model.adapter.is_encoder_decoder)
        assert all(pieces), "an empty piece was sent"
        counts.append(len(pieces))
    assert max(counts) > 1, "every answer came as one piece: nothing was streamed"
    assert not _stream_threads()


def test_video_streams_too(tiny_vicuna):
    size = tiny_vicuna.vision_spec.image_size
    video = torch.randn(1, 3, 2, size, size, generator=torch.Generator().manual_seed(2))
    samples = {"image": video, "prompt": PROMPT}
    pieces = list(tiny_vicuna.generate(samples, num_beams=1, max_length=20, stream=True))
    assert "".join(pieces) == tiny_vicuna.generate(samples, num_beams=1, max_length=20)[0]


class _SlowForward:
    """Counts the LLM's forward calls, each a few milliseconds long, and fails on the
    `fail_at`-th call when asked to."""

    def __init__(self, llm, fail_at: int | None = None) -> None:
        self.forward, self.calls, self.fail_at = llm.forward, 0, fail_at

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError(f"forward {self.calls} failed on purpose")
        time.sleep(0.003)
        return self.forward(*args, **kwargs)


@pytest.mark.parametrize("stop", ["close", "drop", "break"])
def test_a_consumer_that_stops_early_ends_the_thread(stop, tiny_opt, monkeypatch):
    llm = tiny_opt.adapter.llm
    slow = _SlowForward(llm)
    monkeypatch.setattr(llm, "forward", slow)
    settings = dict(num_beams=1, max_length=150, min_length=150)
    if stop == "break":
        for _ in tiny_opt.generate(_samples(tiny_opt), stream=True, **settings):
            break
    else:
        stream = tiny_opt.generate(_samples(tiny_opt), stream=True, **settings)
        next(stream)
        if stop == "close":
            stream.close()
            assert list(stream) == []
        else:
            del stream
    assert not _stream_threads()
    calls = slow.calls
    assert calls < 100, f"generation ran on to {calls} steps after the consumer stopped"
    time.sleep(0.05)
    assert slow.calls == calls


@pytest.mark.parametrize("fixture", ["tiny_vicuna", "tiny_flant5"])
def test_an_error_in_the_thread_reaches_the_caller(fixture, request, monkeypatch):
    model = request.getfixturevalue(fixture)
    llm = model.adapter.llm
    monkeypatch.setattr(llm, "forward", _SlowForward(llm, fail_at=4))
    stream = model.generate(_samples(model), stream=True, num_beams=1, max_length=30,
                            min_length=30)
    with pytest.raises(RuntimeError, match="forward 4 failed on purpose"):
        for _ in stream:
            pass
    assert not _stream_threads()
    with pytest.raises(StopIteration):
        next(stream)


@pytest.mark.parametrize("settings, n", [(dict(num_beams=3), 1), (dict(num_beams=1), 2),
                                         (dict(num_beams=1, num_captions=2,
                                               use_nucleus_sampling=True), 1)])
def test_beams_batches_and_captions_are_refused(settings, n, tiny_vicuna):
    with pytest.raises(LavisIbError) as exc:
        tiny_vicuna.generate(_samples(tiny_vicuna, n), stream=True, **settings)
    message = str(exc.value)
    assert "stream=True" in message and "num_beams=1" in message and "\n" not in message
    assert not _stream_threads()

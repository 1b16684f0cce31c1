"""Answers that appear while they are generated: streamed text piece by piece where the
model can stream (one request, one beam: `generate(..., stream=True)` / `chat(...,
stream=True)`), else the elapsed time while beam search runs and then the final text;
with elapsed seconds and tokens per second either way. Also the page's chat turn."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

POLL_S = 0.25   # how often the page hears of a generation that does not stream


@dataclass
class Progress:
    """The answer so far (empty while beam search runs), whether it is final, the seconds
    since the request started, the tokens of the text so far, and whether it streamed."""
    text: str
    done: bool
    elapsed: float
    tokens: int
    streamed: bool
    beams: int = 1

    @property
    def rate(self) -> float:
        return self.tokens / self.elapsed if self.elapsed > 0 else 0.0

    def line(self, label: str) -> str:
        speed = f"{self.elapsed:.1f} s, {self.tokens} tokens, {self.rate:.1f} tokens/s"
        if self.done:
            how = "streamed" if self.streamed else (
                f"{self.beams} beams: shown when done" if self.beams > 1 else "shown when done")
            return f"{label}: done in {speed} ({how})."
        if self.streamed:
            return f"{label}: generating… {speed}"
        return f"{label}: generating with {self.beams} beam(s)… {self.elapsed:.1f} s"


def _close(iterator: Any) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


def live_text(count_tokens: Callable[[str], int], stream: Callable[[], Iterator[str]] | None,
              blocking: Callable[[], str], beams: int = 1,
              poll_s: float = POLL_S) -> Iterator[Progress]:
    """Progress of one generation. `stream()`: the model's iterator of text pieces (the
    final text is their concatenation, as the API guarantees); without it, `blocking()`
    runs in a worker thread and a progress line comes every `poll_s` seconds. An error
    of the generation is raised here, in the caller; a consumer that stops early closes
    the model's iterator (its worker thread ends) or waits for the worker to finish."""
    import torch

    start = time.perf_counter()
    if stream is not None:
        pieces = stream()
        text = ""
        try:
            for piece in pieces:
                text += piece
                yield Progress(text, False, time.perf_counter() - start, count_tokens(text), True)
        finally:
            _close(pieces)
        yield Progress(text, True, time.perf_counter() - start, count_tokens(text), True)
        return
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            with torch.inference_mode():
                result["text"] = blocking()
        except BaseException as exc:   # re-raised in the caller below
            result["error"] = exc

    worker = threading.Thread(target=work, name="lavis-ib-generate", daemon=True)
    worker.start()
    try:
        while True:
            worker.join(poll_s)
            if not worker.is_alive():
                break
            yield Progress("", False, time.perf_counter() - start, 0, False, beams)
    finally:   # a consumer that leaves early waits: the next request never overlaps this one
        worker.join()
    if "error" in result:
        raise result["error"]
    text = result["text"]
    yield Progress(text, True, time.perf_counter() - start, count_tokens(text), False, beams)


def message_text(content: Any) -> str:
    """A chat message's text, whether Gradio hands it over as a string or as a list of
    content parts ({"type": "text", "text": ...})."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("value") or "")
    if isinstance(content, (list, tuple)):
        return "".join(message_text(part) for part in content)
    return "" if content is None else str(content)


def chat_messages(history: list | None, message: str) -> list[dict[str, str]]:
    """The API's `messages` (role and text of each turn) from the page's history plus the
    new user turn."""
    turns = [{"role": str(m.get("role")), "content": message_text(m.get("content"))}
             for m in (history or []) if m.get("role") in ("user", "assistant")]
    return turns + [{"role": "user", "content": message}]

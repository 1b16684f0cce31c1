"""Streamed generation: text pieces as the LLM produces tokens (`generate(..., stream=True)`).

transformers' `generate` hands each new token to a streamer; it runs here in a worker
thread while the caller iterates over the decoded pieces, so a 7B answer shows as it grows.
The pieces join to exactly the text `generate` returns without streaming."""
from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable, Iterator

import torch

logger = logging.getLogger(__name__)

#: the worker thread's name (a test finds leaked threads by it)
THREAD_NAME = "lavis_ib-stream"
_END = object()


class _Cancelled(Exception):
    """Raised inside `generate` (from the streamer) when the consumer stopped iterating."""


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class PieceStreamer:
    """A transformers streamer (`put` / `end`) that turns token ids into text pieces.

    The first `put` is the prompt (empty for a decoder-only LLM fed embeddings, the decoder
    start token for an encoder-decoder one) and is skipped. Each later put re-decodes the
    answer so far (special tokens skipped, as `adapter.decode`) and releases the text up to
    its last whitespace: the word still growing, and a multi-byte character still split over
    byte tokens, wait; `end` releases the rest, stripped as `adapter.decode` strips."""

    def __init__(self, tokenizer, pieces: "queue.Queue", cancelled: threading.Event) -> None:
        self.tokenizer = tokenizer
        self.pieces = pieces
        self.cancelled = cancelled
        self.ids: list[int] = []
        self.sent = ""
        self._prompt_seen = False

    def _text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True).lstrip()

    def _send(self, text: str) -> None:
        if not text.startswith(self.sent):   # a decoder that rewrote released text
            logger.warning("streamed text %r is not a prefix of the decoded answer %r; the "
                           "joined pieces will differ from generate's text", self.sent, text)
            return
        if len(text) > len(self.sent):
            self.pieces.put(text[len(self.sent):])
            self.sent = text

    def put(self, value: torch.Tensor) -> None:
        if self.cancelled.is_set():
            raise _Cancelled()
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.ids.extend(int(t) for t in value.reshape(-1).tolist())
        text = self._text()
        cut = max((i for i, c in enumerate(text) if c.isspace()), default=-1)
        if cut > 0:
            self._send(text[:cut].rstrip())

    def end(self) -> None:
        self._send(self._text().strip())


class TextStream(Iterator[str]):
    """An iterator of text pieces from a worker thread running `generate`.

    An error in the thread is raised in the caller at the next piece. Stopping early
    (`close()`, leaving a `for` loop over `iter(stream)` that is then dropped, or dropping
    the stream) ends the thread at its next token."""

    def __init__(self, run: Callable[[PieceStreamer], Any], tokenizer) -> None:
        pieces: queue.Queue = queue.Queue()
        self._pieces = pieces
        self._cancelled = threading.Event()
        streamer = PieceStreamer(tokenizer, pieces, self._cancelled)
        inference = torch.is_inference_mode_enabled()   # grad modes are per thread

        def work() -> None:   # holds no reference to the stream: dropping it closes it
            try:
                with (torch.inference_mode() if inference else torch.no_grad()):
                    run(streamer)
            except _Cancelled:
                pass
            except BaseException as exc:   # re-raised in the caller
                pieces.put(_Failed(exc))
            finally:
                pieces.put(_END)

        self._streamer = streamer
        self._thread = threading.Thread(target=work, name=THREAD_NAME, daemon=True)
        self._done = False
        self._thread.start()

    @property
    def num_tokens(self) -> int:
        """Tokens generated so far (an end-of-text token included), for a rate."""
        return len(self._streamer.ids)

    def __iter__(self) -> "TextStream":
        return self

    def __next__(self) -> str:
        if self._done:
            raise StopIteration
        item = self._pieces.get()
        if item is _END:
            self._finish()
            raise StopIteration
        if isinstance(item, _Failed):
            self._finish()
            raise item.exc
        return item

    def _finish(self) -> None:
        self._done = True
        self._thread.join()

    def close(self) -> None:
        """Stop generating (at the next token) and wait for the thread to end."""
        if self._done:
            return
        self._cancelled.set()
        self._finish()

    def __enter__(self) -> "TextStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:   # interpreter shutdown
            pass

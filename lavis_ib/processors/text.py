"""Text normalisation of captions and questions (BLIP recipe): lower-case, strip
``.!"()*#:;~``, collapse whitespace, keep at most `max_words` words."""
from __future__ import annotations

import re

from lavis_ib.common.registry import registry
from lavis_ib.processors.base_processor import BaseProcessor

_PUNCT = re.compile(r"[.!\"()*#:;~]")
_SPACES = re.compile(r"\s{2,}")


def normalize_caption(text: str, max_words: int = 50) -> str:
    """Captions: punctuation becomes a space (so 'a.b' keeps two words)."""
    text = _PUNCT.sub(" ", str(text).lower())
    text = _SPACES.sub(" ", text).rstrip("\n").strip(" ")
    return " ".join(text.split(" ")[:max_words]) if max_words else text


def normalize_question(text: str, max_words: int = 50) -> str:
    """Questions: punctuation is removed in place."""
    text = _PUNCT.sub("", str(text).lower()).rstrip(" ")
    text = _SPACES.sub(" ", text).strip()
    return " ".join(text.split(" ")[:max_words]) if max_words else text


@registry.register_processor("blip_caption")
class BlipCaptionProcessor(BaseProcessor):
    """`prompt` + the normalised caption."""

    def __init__(self, prompt: str = "", max_words: int = 50) -> None:
        self.prompt = prompt
        self.max_words = max_words

    def __call__(self, caption: str) -> str:
        return self.prompt + normalize_caption(caption, self.max_words)


@registry.register_processor("blip_question")
class BlipQuestionProcessor(BaseProcessor):
    def __init__(self, max_words: int = 50) -> None:
        self.max_words = max_words

    def __call__(self, question: str) -> str:
        return normalize_question(question, self.max_words)

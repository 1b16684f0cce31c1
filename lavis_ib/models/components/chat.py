"""A multi-turn conversation about one image as the LLM's prompt (`model.chat`).

The history is written as the LLaVA-Instruct conversations are for training (earlier turns
as ``USER: q ASSISTANT: a`` lines, then the current question), so a chat reads the format the
model learnt in context; a history too long for the prompt limit loses whole turns, oldest
first. The Q-Former reads the current question only (see `ChatPrompt`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from lavis_ib.common.errors import LavisIbError

ROLES = ("user", "assistant")


def history_turn(question: str, answer: str) -> str:
    """One earlier turn as a line of the LLM's prompt (the LLaVA training format)."""
    return f"USER: {question} ASSISTANT: {answer}"


def format_chat(history: Sequence[tuple[str, str]], question: str) -> str:
    """The LLM's prompt: the earlier (question, answer) turns as lines, then the current
    question as it is (so a one-turn chat's prompt is its question)."""
    return "\n".join([*(history_turn(q, a) for q, a in history), question])


def chat_turns(messages: Any) -> tuple[list[tuple[str, str]], str]:
    """(earlier (question, answer) turns, current question) of `messages`: a list of
    {"role": "user"|"assistant", "content": str}, alternating from a user turn and ending
    with one. Anything else is one `LavisIbError` naming the message and the fix."""
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or not messages:
        raise LavisIbError(f"chat: messages must be a non-empty list of {{'role', 'content'}} "
                           f"dicts ending with a user turn; got {type(messages).__name__}.")
    texts = []
    for i, message in enumerate(messages):
        want = ROLES[i % 2]
        if not isinstance(message, Mapping) or set(message) != {"role", "content"}:
            raise LavisIbError(f"chat: messages[{i}] must be a dict with exactly 'role' and "
                               f"'content'; got {message!r}.")
        if message["role"] != want:
            raise LavisIbError(f"chat: messages[{i}] has role {message['role']!r}; turns "
                               f"alternate 'user', 'assistant', ... from a 'user' turn, so "
                               f"this one must be {want!r}.")
        if not isinstance(message["content"], str):
            raise LavisIbError(f"chat: messages[{i}]['content'] must be a str; got "
                               f"{type(message['content']).__name__}.")
        texts.append(message["content"])
    if len(texts) % 2 == 0:
        raise LavisIbError(f"chat: the last message (messages[{len(texts) - 1}]) is the "
                           f"assistant's; end with the user's question to answer.")
    history = [(texts[i], texts[i + 1]) for i in range(0, len(texts) - 1, 2)]
    return history, texts[-1]


@dataclass(frozen=True)
class ChatPrompt:
    """What one chat call reads. `llm_text`: the history kept and the question, for the
    LLM; `qformer_text`: the question alone, for the Q-Former, which was trained on one
    instruction of at most 128 tokens and would lose the question to a long history;
    `turns_dropped`: earlier turns cut to fit the prompt limit."""

    llm_text: str
    qformer_text: str
    turns_kept: int
    turns_dropped: int


def fit_chat(history: Sequence[tuple[str, str]], question: str, room: int | None,
             count_tokens: Callable[[str], int]) -> ChatPrompt:
    """The longest suffix of whole earlier turns whose prompt (`format_chat`) has at most
    `room` tokens (`count_tokens`; None: no limit). The question is always kept, even
    alone over the limit (the model's prompt rule then cuts it, as for any prompt)."""
    kept = list(history)
    if room is not None:
        while kept and count_tokens(format_chat(kept, question)) > room:
            kept.pop(0)
    return ChatPrompt(format_chat(kept, question), question, len(kept),
                      len(history) - len(kept))

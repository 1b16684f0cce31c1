"""What each button of the web demo does for the one model served or for the models
compared side by side (`lavis-ib serve --compare`): the same request to each model in
turn, their results in columns, one status line per model. Plain Python (no Gradio)."""
from __future__ import annotations

from typing import Any, Iterator, Sequence

from lavis_ib.common.errors import LavisIbError
from lavis_ib.web.live import chat_messages, live_text
from lavis_ib.web.model import DemoModel, attention_for_page, error_text, rank_for_page


def _settings(num_beams, max_length, min_length, use_nucleus_sampling, top_p, temperature,
              repetition_penalty) -> dict:
    return {"num_beams": num_beams, "max_length": max_length, "min_length": min_length,
            "use_nucleus_sampling": use_nucleus_sampling, "top_p": top_p,
            "temperature": temperature, "repetition_penalty": repetition_penalty}


def _status(lines: list[str]) -> str:
    """One line per model (a Markdown line break between them)."""
    return "  \n".join(line for line in lines if line)


def _label(demos: Sequence[DemoModel], demo: DemoModel, alone: str) -> str:
    """What a status line starts with: the model's name when several answer."""
    return demo.label if len(demos) > 1 else alone


def _failed(demos: Sequence[DemoModel], demo: DemoModel, exc: LavisIbError) -> str:
    return error_text(exc) if len(demos) == 1 else f"{demo.label}: {error_text(exc)}"


def _live(demo: DemoModel, run_stream, run_blocking, beams: int, how: str):
    """live_text for one request: streamed where one beam and the model's `how` streams."""
    stream = run_stream if int(beams) == 1 and demo.can_stream(how) else None
    return live_text(demo.count_tokens, stream, run_blocking, int(beams))


def generate_live_for_page(demos: Sequence[DemoModel], image_path, video_path, prompt,
                           num_beams, max_length, min_length, use_nucleus_sampling, top_p,
                           temperature, repetition_penalty, seed) -> Iterator[tuple]:
    """Yields (answer per model..., status) as each model generates in turn."""
    settings = _settings(num_beams, max_length, min_length, use_nucleus_sampling, top_p,
                         temperature, repetition_penalty)
    answers, lines = [""] * len(demos), [""] * len(demos)
    for i, demo in enumerate(demos):
        label = _label(demos, demo, "Generated")
        try:
            samples, kwargs, notes = demo.generation_call(image_path, video_path, prompt,
                                                          settings, seed)
            progress = _live(demo, lambda: demo.model.generate(samples, stream=True, **kwargs),
                             lambda: demo.model.generate(samples, **kwargs)[0],
                             kwargs.get("num_beams", 1), "generate")
            for step in progress:
                answers[i], lines[i] = step.text, step.line(label)
                yield (*answers, _status(lines))
            lines[i] = " ".join([lines[i]] + notes)
        except LavisIbError as exc:
            answers[i] = ""
            lines[i] = _failed(demos, demo, exc)
        yield (*answers, _status(lines))


def generate_for_page(demo: DemoModel, image_path, video_path, prompt, num_beams, max_length,
                      min_length, use_nucleus_sampling, top_p, temperature, repetition_penalty,
                      seed) -> tuple[str, str]:
    """(answer, status) of one model: the page's generation run to its end (bad input
    leaves the answer empty and the status says why)."""
    last = None
    for last in generate_live_for_page([demo], image_path, video_path, prompt, num_beams,
                                       max_length, min_length, use_nucleus_sampling, top_p,
                                       temperature, repetition_penalty, seed):
        pass
    return last


def chat_live_for_page(demos: Sequence[DemoModel], image_path, video_path, message,
                       num_beams, max_length, min_length, use_nucleus_sampling, top_p,
                       temperature, repetition_penalty, seed, *histories) -> Iterator[tuple]:
    """Yields (history per model..., the message box, status): the user's turn and each
    model's reply (`model.chat` with the history so far, streamed where it can be). On an
    error the histories stay as they were and the message stays in its box."""
    settings = _settings(num_beams, max_length, min_length, use_nucleus_sampling, top_p,
                         temperature, repetition_penalty)
    message = (message or "").strip()
    before = [list(h or []) for h in histories]
    after = [list(h) for h in before]
    lines = [""] * len(demos)
    failed = False
    for i, demo in enumerate(demos):
        label = _label(demos, demo, "Replied")
        try:
            if not hasattr(demo.model, "chat"):
                raise LavisIbError(f"{demo.label} has no chat (its model has no "
                                   f"`chat(samples, messages)`).")
            samples, kwargs, notes = demo.generation_call(image_path, video_path, message,
                                                          settings, seed)
            media = {"image": samples["image"]}
            messages = chat_messages(before[i], message)
            after[i] = before[i] + [{"role": "user", "content": message},
                                    {"role": "assistant", "content": ""}]
            progress = _live(demo, lambda: demo.model.chat(media, messages, stream=True, **kwargs),
                             lambda: demo.model.chat(media, messages, **kwargs),
                             kwargs.get("num_beams", 1), "chat")
            dropped = _turns_dropped(demo)
            for step in progress:
                after[i][-1] = {"role": "assistant", "content": step.text}
                lines[i] = step.line(label)
                yield (*after, "", _status(lines))
            dropped = _turns_dropped(demo) - dropped
            if dropped:
                notes = [f"{dropped} earlier turn(s) left out (oldest first) to fit the "
                         f"prompt limit."] + notes
            lines[i] = " ".join([lines[i]] + notes)
        except LavisIbError as exc:
            failed = True
            after[i] = before[i]
            lines[i] = _failed(demos, demo, exc)
    yield (*after, message if failed else "", _status(lines))


def _turns_dropped(demo: DemoModel) -> int:
    """Earlier chat turns the model has left out to fit its prompt limit, so far."""
    counts = getattr(demo.model, "chat_counts", None)
    return int(counts().get("turns_dropped", 0)) if callable(counts) else 0


def rank_compare_for_page(demos: Sequence[DemoModel], image_path, video_path, prompt,
                          candidates_text, kind="sum") -> tuple:
    """(chart, table, per-token table, CSV per model..., status)."""
    out, lines = [], []
    for demo in demos:
        *views, line = rank_for_page(demo, image_path, video_path, prompt, candidates_text, kind)
        out += views
        lines.append(line if len(demos) == 1 else f"{demo.label}: {line}")
    return (*out, _status(lines))


def attention_compare_for_page(demos: Sequence[DemoModel], image_path, video_path, first,
                               second, layer="all") -> tuple:
    """(first overlay, second overlay per model..., status)."""
    out, lines = [], []
    for demo in demos:
        a, b, line = attention_for_page(demo, image_path, video_path, first, second, layer)
        out += [a, b]
        lines.append(line)
    return (*out, _status(lines))


def example_image_for_page() -> tuple[Any, str]:
    """(a copy of the example image for the image widget, status)."""
    from lavis_ib.web.examples import EXAMPLE_IMAGE_CREDIT, example_image_copy

    try:
        return example_image_copy(), f"Example image: {EXAMPLE_IMAGE_CREDIT}."
    except LavisIbError as exc:
        return None, error_text(exc)

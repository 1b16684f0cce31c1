"""What the web demo computes, in plain Python: an answer generated, or candidates ranked,
for one uploaded image or video.

The page (`lavis_ib.web.page`) only wires these functions (and `web.callbacks`) to widgets,
so they are tested without a browser against `model.generate` / `model.score_candidates`."""
from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

from lavis_ib.common.errors import ConfigError, DataError, LavisIbError
from lavis_ib.models.generation import (PROMPT_LIMITS, SHORT_ANSWER, UNBOUNDED_MAX_LENGTH,
                                        prompt_refusal, range_problems)
from lavis_ib.web.ranking import SCORE_KINDS, Ranking, token_log_probabilities

log = logging.getLogger(__name__)

# the page's initial settings: the short-answer preset (beam search, at most 30 tokens)
GENERATION_DEFAULTS = SHORT_ANSWER.pick(("num_beams", "max_length", "min_length",
                                         "use_nucleus_sampling", "top_p", "temperature",
                                         "repetition_penalty"))
#: what the page calls each setting (in its messages too)
LABELS = {"num_beams": "Beams", "max_length": "Max length", "min_length": "Min length",
          "top_p": "Top-p", "temperature": "Temperature",
          "repetition_penalty": "Repetition penalty"}
MAX_CANDIDATES = 100  # a bar per candidate; more would not be readable


def parse_candidates(text: str | None) -> list[str]:
    """Comma-separated answers (as `lavis-ib predict --candidates`), stripped; an empty
    list, a repeated answer or more than MAX_CANDIDATES is an error, not a silent fix."""
    candidates = [c.strip() for c in (text or "").split(",") if c.strip()]
    if not candidates:
        raise ConfigError("Candidates: type at least one answer (comma-separated, e.g. yes, no).")
    seen = set()
    for cand in candidates:
        if cand in seen:
            raise ConfigError(f"Candidates: '{cand}' is listed twice; list each answer once.")
        seen.add(cand)
    if len(candidates) > MAX_CANDIDATES:
        raise ConfigError(f"Candidates: {len(candidates)} given; at most {MAX_CANDIDATES}.")
    return candidates


def check_generation_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings with the page's numbers as ints/floats; a value out of range names
    the setting, its value and its range (`models.generation.range_problems`: the page's
    sliders bound them, its HTTP API does not)."""
    out = dict(settings)
    for key in ("num_beams", "max_length", "min_length"):
        out[key] = int(out[key])
    for key in ("top_p", "temperature", "repetition_penalty"):
        out[key] = float(out[key])
    out["use_nucleus_sampling"] = bool(out["use_nucleus_sampling"])
    problems = range_problems(out, lambda key: f"{LABELS.get(key, key)} {out[key]}")
    if problems:
        raise ConfigError("; ".join(problems) + ".")
    return out


def max_length_limit(model: Any) -> int:
    """The max-length controls' upper end: the tokens prompt and answer share in the LLM's
    context beside one image's soft prompts (a Q-Former model's `generation_room`), or
    UNBOUNDED_MAX_LENGTH where the context does not bound them or the model does not say."""
    from lavis_ib.models.components.inference import InferenceMixin

    room = model.generation_room() if isinstance(model, InferenceMixin) else None
    return UNBOUNDED_MAX_LENGTH if room is None else room


def prompt_token_limit(model: Any, frames: int, budget: int) -> int | None:
    """The prompt tokens a Q-Former model reads beside `frames` frames' soft prompts and
    `budget` tokens to generate or score (its adapter's `prompt_room`, where `generate`
    would cut); None for a model that does not say (a plugin model)."""
    from lavis_ib.models.components.inference import InferenceMixin

    if not isinstance(model, InferenceMixin):
        return None
    return model.adapter.prompt_room(frames * model.query_tokens.shape[1], budget)


def prompt_tokens(model: Any, prompt: str) -> int:
    """Tokens of `prompt` as the model's LLM reads it (special tokens included)."""
    return len(model.adapter.tokenizer(prompt, add_special_tokens=True).input_ids)


def _read_upload(load, path: str, processor: Any):
    """`load(path, processor)`, with an error naming the file as the user uploaded it (Gradio
    keeps uploads under their own name in a temporary folder; the folder means nothing to
    the user)."""
    try:
        return load(path, processor)
    except DataError as exc:
        raise DataError(str(exc).replace(path, os.path.basename(path))) from None


class DemoModel:
    """A loaded model with its eval image processor, answering one upload at a time.

    Bad input (no media, both media, an unreadable file, an empty prompt, a prompt over the
    limits, a setting out of range) raises `LavisIbError`; the `*_for_page` wrappers turn
    it into a message on the page. A prompt over `max_prompt_chars` characters or over the
    tokens the model reads here is refused, never cut (`models.generation.PROMPT_LIMITS`,
    "serve").
    """

    def __init__(self, model: Any, vis_processors: dict, label: str,
                 max_prompt_chars: int | None = PROMPT_LIMITS["serve"].max_chars):
        self.model, self.label = model, label
        self.max_prompt_chars = max_prompt_chars
        self.refused_prompts = 0   # prompts refused as over a limit, over the server's life
        self.image_processor = vis_processors.get("eval")
        if self.image_processor is None:
            raise LavisIbError(f"{label} has no eval image processor in its config.")
        self.max_length_limit = max_length_limit(model)

    def media(self, image_path: str | None, video_path: str | None):
        """(1, C, H, W) for an image, (1, C, T, H, W) for a video, on the model's device."""
        from lavis_ib.processors.media_files import load_image, load_video

        if image_path and video_path:
            raise DataError("Both an image and a video are loaded: clear one of them.")
        if video_path:
            batch = _read_upload(load_video, video_path, self.image_processor)[None]
        elif image_path:
            batch = _read_upload(load_image, image_path, self.image_processor)[None]
        else:
            raise DataError("Upload an image or a video first.")
        return batch.to(self.model.device)

    def samples(self, image_path: str | None, video_path: str | None, prompt: str | None,
                budget: int) -> dict:
        """The model's batch of one; `budget`: the tokens to generate or score (they share
        a decoder-only LLM's context with the prompt)."""
        prompt = (prompt or "").strip()
        if not prompt:
            raise ConfigError("Type a prompt (an instruction or a question).")
        if self.max_prompt_chars is not None and len(prompt) > self.max_prompt_chars:
            self.refuse_prompt(prompt, None)    # before the upload is decoded
        image = self.media(image_path, video_path)
        frames = image.shape[2] if image.dim() == 5 else 1
        self.refuse_prompt(prompt, prompt_token_limit(self.model, frames, budget))
        return {"image": image, "prompt": prompt}

    def refuse_prompt(self, prompt: str, max_tokens: int | None) -> None:
        """Raise the page's message when `prompt` is over the character or token limit
        (counted in `refused_prompts` and logged); characters are counted first."""
        why = prompt_refusal(prompt, self.max_prompt_chars,
                             lambda text: prompt_tokens(self.model, text), max_tokens,
                             "this server (lavis-ib serve --max-prompt-chars)",
                             f"{self.label} beside the image and the answer")
        if why:
            self.refused_prompts += 1
            log.warning("prompt refused (%d so far): %s", self.refused_prompts, why)
            raise ConfigError(why)

    def generation_call(self, image_path, video_path, prompt, settings: dict, seed: int = 0
                        ) -> tuple[dict, dict, list[str]]:
        """(samples, generate's keyword arguments, notes) of one request, the seed set when
        sampling; notes name every setting this model does not accept and that was
        therefore not applied, so nothing is dropped without the page saying so."""
        import torch

        settings = check_generation_settings(settings)
        if seed is None or float(seed) != int(seed):
            raise ConfigError(f"Seed: type a whole number (got {seed!r}).")
        accepted = type(self.model).generation_settings()
        ignored = sorted(set(settings) - accepted)
        kwargs = {k: v for k, v in settings.items() if k in accepted}
        notes = [f"{self.label} does not accept '{k}'; it was not applied." for k in ignored]
        for note in notes:
            log.warning(note)
        samples = self.samples(image_path, video_path, prompt, settings["max_length"])
        if settings["use_nucleus_sampling"]:
            torch.manual_seed(int(seed))  # the same seed draws the same answer again
        return samples, kwargs, notes

    def generate(self, image_path, video_path, prompt, settings: dict, seed: int = 0
                 ) -> tuple[str, list[str]]:
        """(answer, notes) of `generation_call`'s request."""
        import torch

        samples, kwargs, notes = self.generation_call(image_path, video_path, prompt, settings,
                                                      seed)
        with torch.inference_mode():
            answers = self.model.generate(samples, **kwargs)
        return answers[0], notes

    def can_stream(self, method: str = "generate") -> bool:
        """Whether the model's `generate` / `chat` takes `stream=True`."""
        import inspect

        call = getattr(self.model, method, None)
        return call is not None and "stream" in inspect.signature(call).parameters

    def count_tokens(self, text: str) -> int:
        """Tokens of generated `text` as the LLM's tokenizer splits it (no special tokens)."""
        return len(self.model.adapter.tokenizer(text, add_special_tokens=False).input_ids)

    def rank(self, image_path, video_path, prompt, candidates_text, kind: str = "sum"
             ) -> Ranking:
        """The candidates scored by `score_candidates` with the model's own EOS default,
        each with its tokens' log-probabilities; ordered by `kind` (SCORE_KINDS)."""
        import torch

        if kind not in SCORE_KINDS:
            raise ConfigError(f"Order by: '{kind}' is not one of {', '.join(SCORE_KINDS)}.")
        candidates = parse_candidates(candidates_text)
        append_eos = bool(getattr(self.model, "default_append_eos", True))
        rows = self.model.adapter.tokenize_targets(candidates, append_eos=append_eos) \
            if hasattr(self.model, "adapter") else [[0]]
        samples = self.samples(image_path, video_path, prompt, max(map(len, rows)))
        if kind != "sum" and not hasattr(self.model, "adapter"):
            raise ConfigError(f"Order by: {self.label} does not say how it splits candidates "
                              f"into tokens (no LLM adapter); order by 'sum'.")
        with torch.inference_mode():
            scores, _ = self.model.score_candidates(samples, candidates, append_eos=append_eos)
            # a plugin model without an LLM adapter: no per-token view (the table says so)
            tokens = token_log_probabilities(self.model, samples, candidates, append_eos) \
                if hasattr(self.model, "adapter") else [[] for _ in candidates]
        row = [float(s) for s in scores[0, :len(candidates)].tolist()]
        return Ranking.ordered(candidates, row, [len(t) for t in tokens], tokens, kind)

    def prompt_token_limit(self, frames: int = 1, budget: int = 1) -> int | None:
        """The prompt tokens this model reads beside `frames` frames and `budget` tokens."""
        return prompt_token_limit(self.model, frames, budget)

    def video_frames(self, video_path: str) -> list:
        """The frames the video processor samples from `video_path` (PIL images, before
        resizing): what `media` turns into the model's input."""
        from PIL import Image

        from lavis_ib.processors.media_files import video_processor_like
        from lavis_ib.processors.video import read_video_frames

        count = video_processor_like(self.image_processor).n_frms
        try:
            frames = read_video_frames(video_path, count)
        except DataError as exc:   # named as uploaded, not by the upload folder
            raise DataError(str(exc).replace(video_path, os.path.basename(video_path))) from None
        return [Image.fromarray(f.permute(1, 2, 0).numpy()) for f in frames]

    def attention(self, image_path, video_path, first: str, second: str,
                  layer: int | None = None):
        """(`AttentionPair` of the two instructions, (T, H, W, 3) pixels the ViT reads)."""
        from lavis_ib.web.attention_view import attention_pair, displayed_frames

        if not hasattr(self.model, "qformer_attention"):
            raise ConfigError(f"{self.label} has no Q-Former attention to show.")
        second = (second or "").strip()
        if not second:
            raise ConfigError("Type a second instruction to compare with the first.")
        samples = self.samples(image_path, video_path, first, 1)
        frames = samples["image"].shape[2] if samples["image"].dim() == 5 else 1
        self.refuse_prompt(second, prompt_token_limit(self.model, frames, 1))
        pair = attention_pair(self.model, samples, samples["prompt"], second, layer)
        return pair, displayed_frames(samples["image"], self.image_processor)


def error_text(exc: LavisIbError) -> str:
    return f"**Error:** {exc}"


def preview_for_page(image_path: str | None):
    """(the decoded image or None, status) when a file is uploaded: the page shows what the
    model will see, or says at once why the file cannot be read. The upload widget passes
    the file through undecoded, so every unreadable file gets this message, not a Gradio
    preprocessing error."""
    from lavis_ib.processors.media_files import load_image

    if not image_path:
        return None, ""
    try:
        image = _read_upload(load_image, image_path, lambda decoded: decoded)  # not resized
    except LavisIbError as exc:
        return None, error_text(exc)
    return image, f"Image loaded ({image.width}x{image.height} pixels)."


def rank_for_page(demo: DemoModel, image_path, video_path, prompt, candidates_text,
                  kind: str = "sum"):
    """(chart, scores table, per-token table, CSV file, status) for the page; on bad input
    no chart, empty tables, no file and the reason."""
    try:
        ranking = demo.rank(image_path, video_path, prompt, candidates_text, kind)
    except LavisIbError as exc:
        return None, "", "", None, error_text(exc)
    folder = os.environ.get("GRADIO_TEMP_DIR") or None   # the server's upload folder
    handle, path = tempfile.mkstemp(prefix="ranking-", suffix=".csv", dir=folder)
    os.close(handle)
    return (ranking.figure(), ranking.as_markdown(), ranking.tokens_markdown(),
            ranking.write_csv(path),
            f"Ranked {len(ranking.candidates)} candidates by {ranking.kind}; "
            f"best: {ranking.candidates[0]}.")


def attention_for_page(demo: DemoModel, image_path, video_path, first, second, layer="all"):
    """(overlay of the first instruction, overlay of the second, status): both maps on
    one colour scale (the larger maximum); the status gives the difference of the maps."""
    from lavis_ib.web.attention_view import overlay

    try:
        pair, frames = demo.attention(image_path, video_path, first, second,
                                      None if layer in (None, "all") else int(layer))
    except (LavisIbError, ValueError) as exc:
        return None, None, error_text(exc)
    top = max(float(m.max()) for m in pair.maps)
    return (overlay(frames, pair.maps[0], top), overlay(frames, pair.maps[1], top),
            f"Attention of {demo.label}: difference between the maps {pair.difference:.3g} "
            f"(0 = same places, 1 = disjoint); on CLS {pair.cls_shares[0]:.4f} and "
            f"{pair.cls_shares[1]:.4f}; colour scale 0 to {top:.4f} per patch.")


def frames_for_page(demo: DemoModel, video_path):
    """(the sampled frames for the gallery, status) when a video is uploaded, instead of a
    browser preview (which needs the file converted: no external program runs here)."""
    if not video_path:
        return None, ""
    try:
        frames = demo.video_frames(video_path)
    except LavisIbError as exc:
        return None, error_text(exc)
    return ([(f, f"frame {i + 1}") for i, f in enumerate(frames)],
            f"Video loaded: {len(frames)} frames sampled ({frames[0].width}x"
            f"{frames[0].height} pixels).")

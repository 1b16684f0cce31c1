"""Generation and candidate ranking of Q-Former models (mixed into the model class).

One implementation of LAVIS's inference API for InstructBLIP and BLIP-2 alike, since both
turn an image into soft prompts and leave the rest to their LLM (`InferenceMixin`)."""
from __future__ import annotations

import inspect
import logging
from typing import Any, Sequence

import torch

from lavis_ib.common.errors import LavisIbError
from lavis_ib.models.components.chat import chat_turns, fit_chat
from lavis_ib.models.components.streaming import TextStream
from lavis_ib.models.components.lavis_prompts import class_prompt_prefixes, fill_prompt
from lavis_ib.models.generation import ANSWERS as _A
from lavis_ib.models.generation import INSTRUCTBLIP as _D
from lavis_ib.models.generation import (ContextFitted, GenerationSettings, answer_length_penalty,
                                        fitted_max_length, merge_transformers_names,
                                        range_problems)

logger = logging.getLogger(__name__)

#: how `score_candidates` turns a candidate's token log-probabilities into its score
AGGREGATES = ("sum", "lavis_segment_mean")


def lavis_segment_means(sums: torch.Tensor, lengths: Sequence[int], n_segments: int,
                        context: int) -> torch.Tensor:
    """LAVIS's decoder-only (Vicuna) ranking score from summed log-probabilities: the
    candidates, in order, form `n_segments` segments (n // n_segments each, the last one
    takes the rest); each candidate's sum is divided by its segment's padded sequence
    length less one, `context` (soft prompts + padded prompt) + the segment's longest
    candidate - 1: LAVIS's per-row mean of the token losses, padding included."""
    n = len(lengths)
    size = n // n_segments
    out = sums.clone()
    for k in range(n_segments):
        start = k * size
        end = n if k == n_segments - 1 else start + size
        if start < end:
            out[start:end] = sums[start:end] / (context + max(lengths[start:end]) - 1)
    return out


def _as_list(value: Any, n: int, what: str) -> list:
    if isinstance(value, str):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise LavisIbError(f"{what}: {len(value)} entries for a batch of {n}.")
    return value


class InferenceMixin:
    """`generate`, `predict_answers`, `score_candidates`, `predict_class`.

    `generate` and `score_candidates` both start from `model.encode` (image -> soft prompts)
    and hand the rest to the LLM adapter (`model.adapter`). Prompts may hold LAVIS's `{}`
    placeholders, filled from the batch as LAVIS's API does (`lavis_prompts`). Generation
    settings (defaults, ranges, the context rule) are `models.generation`'s.
    """

    def _prompts(self, samples: dict[str, Any], prompt: str | None = None) -> list[str]:
        if "image" not in samples:
            raise LavisIbError(f"samples need an 'image' tensor (have {sorted(samples)}).")
        n = samples["image"].shape[0]
        raw = prompt if prompt else samples.get("prompt")
        if raw is None:
            raw = samples.get("text_input", self.prompt)
        if not isinstance(raw, str):
            # one prompt per sample: already final (tasks format them), taken verbatim
            return [str(p) for p in _as_list(raw, n, "prompt")]
        # one template for the batch: LAVIS-style `{}` slots filled per sample
        texts = samples.get("text_input")
        texts = _as_list(texts, n, "text_input") if texts is not None else [None] * n
        ocr = samples.get("ocr_tokens") or [None] * n
        choices = samples.get("choices") or [None] * n
        return [fill_prompt(raw, t, o, c) for t, o, c in zip(texts, ocr, choices)]

    @torch.no_grad()
    def generate(self, samples: dict[str, Any],
                 use_nucleus_sampling: bool = _D.use_nucleus_sampling,
                 num_beams: int = _D.num_beams, max_length: int = ContextFitted(_D.max_length),
                 min_length: int = _D.min_length, top_p: float = _D.top_p,
                 repetition_penalty: float = _D.repetition_penalty,
                 length_penalty: float = _D.length_penalty, num_captions: int = _D.num_captions,
                 temperature: float = _D.temperature, max_new_tokens: int | None = None,
                 do_sample: bool | None = None, top_k: int | None = None,
                 stream: bool = False) -> list[str] | TextStream:
        """Text for each image (num_captions per image, in order).

        `max_length`/`min_length` count generated tokens only; the repetition penalty sees
        generated tokens only; a padded batch returns what one-at-a-time calls return.
        Without `max_length`, its default is lowered to what the LLM's context has left
        after the soft prompts and the longest prompt (`generation.fitted_max_length`); an
        explicit `max_length` that leaves the prompt no room is an error.

        transformers' names work too: `max_new_tokens` is `max_length`, `do_sample` is
        `use_nucleus_sampling`, `top_k` keeps the k likeliest tokens when sampling (None:
        the LLM's `generation_config.top_k`, 50 unless its checkpoint says otherwise).

        Args:
            samples: `image` (B,C,H,W) or (B,C,T,H,W) and `prompt` (str or one per sample;
                without it `text_input`, then the model's default prompt).
            stream: return a `TextStream` of text pieces as they are generated (one
                sample, `num_beams=1`, one caption); `"".join(pieces)` is the text
                `generate` returns without it.
        """
        return self._generate(samples, use_nucleus_sampling=use_nucleus_sampling,
                              num_beams=num_beams, max_length=max_length,
                              min_length=min_length, top_p=top_p,
                              repetition_penalty=repetition_penalty,
                              length_penalty=length_penalty, num_captions=num_captions,
                              temperature=temperature, max_new_tokens=max_new_tokens,
                              do_sample=do_sample, top_k=top_k, stream=stream)

    @classmethod
    def generation_settings(cls) -> frozenset[str]:
        """`generate`'s keyword settings less `stream`, which changes what it returns (an
        evaluation or a project's `generate` mapping cannot take it)."""
        return super().generation_settings() - {"stream"}

    def _generate(self, samples: dict[str, Any], *, stream: bool = False,
                  max_new_tokens: int | None = None, do_sample: bool | None = None,
                  top_k: int | None = None, **settings: Any) -> list[str] | TextStream:
        """`generate`'s work, whatever defaults the model's signature gives it."""
        settings = self._checked_settings("generate", settings, max_new_tokens, do_sample,
                                          top_k)
        if stream:
            self._check_streamable("generate", samples["image"].shape[0]
                                   if "image" in samples else 1, settings)
        prompts = self._prompts(samples)
        prefix = self.encode(samples["image"], prompts)
        return self._generate_from(prefix, prompts, settings, stream)

    @staticmethod
    def _checked_settings(what: str, settings: dict[str, Any], max_new_tokens: Any,
                          do_sample: Any, top_k: Any) -> dict[str, Any]:
        """`settings` with transformers' names merged and every value in its range (a
        transformers name is checked, and named, as given)."""
        given = {k: v for k, v in (("max_new_tokens", max_new_tokens), ("top_k", top_k))
                 if v is not None}
        problems = range_problems(given, lambda key: f"{key} {given[key]!r}")
        if not problems:
            try:
                settings = merge_transformers_names(settings, max_new_tokens, do_sample)
            except ValueError as exc:
                raise LavisIbError(f"{what}: {exc}.") from None
            problems = range_problems(settings, lambda key: f"{key} {settings[key]!r}")
        if problems:
            raise LavisIbError(f"{what}: {'; '.join(problems)}.")
        if top_k is not None:
            settings["top_k"] = top_k
        if top_k is not None and not settings["use_nucleus_sampling"]:
            logger.warning("%s: top_k=%r has no effect without sampling (do_sample=True or "
                           "use_nucleus_sampling=True); decoding is greedy or beam search",
                           what, top_k)
        return settings

    @staticmethod
    def _check_streamable(what: str, batch: int, settings: dict[str, Any]) -> None:
        """transformers streams one sequence: one sample, one beam, one caption."""
        if batch != 1 or int(settings["num_beams"]) != 1 or int(settings["num_captions"]) != 1:
            raise LavisIbError(
                f"{what}(stream=True) streams one text: it needs one sample, num_beams=1 and "
                f"num_captions=1 (got {batch} samples, num_beams={settings['num_beams']}, "
                f"num_captions={settings['num_captions']}); drop stream=True for beam "
                f"search or a batch.")

    def _generate_from(self, prefix: torch.Tensor, prompts: list[str], settings: dict[str, Any],
                       stream: bool) -> list[str] | TextStream:
        """Generation from soft prompts `prefix` and the LLM's `prompts` (text)."""
        settings = dict(settings)
        soft = prefix.shape[1]
        max_length, min_length = settings["max_length"], settings["min_length"]
        if isinstance(max_length, ContextFitted):
            rows = self.inference_rows(prompts, soft, max(1, int(min_length)))
            settings["max_length"] = fitted_max_length(
                max_length, self.adapter.context_room(soft, 0), max(len(r) for r in rows))
        else:
            rows = self.inference_rows(prompts, soft, max_length)
        if stream:
            return TextStream(lambda streamer: self.adapter.generate(
                prefix, rows, streamer=streamer, **settings), self.adapter.tokenizer)
        return self.adapter.decode(self.adapter.generate(prefix, rows, **settings))

    @torch.no_grad()
    def chat(self, samples: dict[str, Any], messages: Sequence[dict[str, str]],
             stream: bool = False, **settings: Any) -> str | TextStream:
        """The answer to the last user turn of a conversation about one image or video.

        The LLM reads the conversation in the LLaVA-Instruct training format
        (`common.prompts.format_chat`), earlier turns dropped whole, oldest first, while it
        is over the prompt limit (`generation.PROMPT_LIMITS["chat"]`; counted in
        `chat_counts()` and logged); the Q-Former reads the last user turn only. A one-turn
        chat is `generate({**samples, "prompt": [question]}, **settings)[0]`.

        Args:
            samples: `image` (1,C,H,W) or a video (1,C,T,H,W).
            messages: [{"role": "user"|"assistant", "content": str}, ...], alternating from
                a user turn and ending with one.
            stream: return a `TextStream` of pieces (`num_beams=1`), as `generate` does.
            settings: `generate`'s settings, its defaults when left out.
        """
        history, question = chat_turns(messages)
        image = samples.get("image") if isinstance(samples, dict) else None
        if not isinstance(image, torch.Tensor) or image.dim() not in (4, 5) or image.shape[0] != 1:
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise LavisIbError(f"chat: samples['image'] must hold one image (1,C,H,W) or one "
                               f"video (1,C,T,H,W); got {shape}. Chat about one at a time.")
        params = inspect.signature(type(self).generate).parameters
        defaults = {k: p.default for k, p in params.items()
                    if k in GenerationSettings.__dataclass_fields__}
        unknown = sorted(set(settings) - type(self).generation_settings())
        if unknown:
            raise LavisIbError(f"chat: unknown generation settings {unknown}; "
                               f"use {sorted(type(self).generation_settings())}.")
        extra = {k: settings.pop(k, None) for k in ("max_new_tokens", "do_sample", "top_k")}
        settings = self._checked_settings("chat", {**defaults, **settings}, **extra)
        if stream:
            self._check_streamable("chat", 1, settings)
        prefix = self.encode(image, [question])
        soft = prefix.shape[1]
        max_length = settings["max_length"]
        budget = max(1, int(settings["min_length"])) if isinstance(max_length, ContextFitted) \
            else int(max_length)
        room = self.adapter.prompt_room(soft, budget)
        tokenizer = self.adapter.tokenizer
        fitted = fit_chat(history, question, room,
                          lambda text: len(tokenizer(text, add_special_tokens=True).input_ids))
        self._chat_counts["chats"] += 1
        if fitted.turns_dropped:
            self._chat_counts["turns_dropped"] += fitted.turns_dropped
            logger.warning("chat: %d of %d earlier turns dropped (oldest first) to fit the "
                           "%d-token prompt limit (%s); %d turns dropped so far",
                           fitted.turns_dropped, len(history), room,
                           self.adapter.prompt_limit_words(soft, budget),
                           self._chat_counts["turns_dropped"])
        out = self._generate_from(prefix, [fitted.llm_text], settings, stream)
        return out if stream else out[0]

    @property
    def _chat_counts(self) -> dict[str, int]:
        counts = self.__dict__.get("_chat_count_store")
        if counts is None:
            counts = self.__dict__["_chat_count_store"] = {"chats": 0, "turns_dropped": 0}
        return counts

    def chat_counts(self) -> dict[str, int]:
        """`chats`: `chat` calls; `turns_dropped`: earlier turns cut from their histories to
        fit the prompt limit (a current turn cut itself is in `inference_counts()`)."""
        return dict(self._chat_counts)

    def inference_rows(self, prompts: Sequence[str], soft: int, budget: int) -> list[list[int]]:
        """The prompts' token rows as the LLM reads them at inference beside `soft` soft
        prompts and `budget` tokens to generate or score: whole, cut from the left only
        where the context is short (`adapter.inference_prompts`). A model whose authors cut
        prompts otherwise overrides this."""
        return self.adapter.inference_prompts(prompts, soft, budget)

    def generation_room(self, frames: int = 1) -> int | None:
        """Tokens the prompt and the generated text share in the LLM's context beside the
        soft prompts of one image (or `frames` video frames); None when the context does
        not bound them (an encoder-decoder LLM)."""
        return self.adapter.context_room(frames * self.query_tokens.shape[1], 0)

    def predict_answers(self, samples: dict[str, Any], num_beams: int = _A.num_beams,
                        inference_method: str = "generate", max_len: int = _A.max_len,
                        min_len: int = _A.min_len, num_ans_candidates: int = 128,
                        answer_list: Sequence[str] | None = None, prompt: str = "",
                        length_penalty: float | None = _A.length_penalty,
                        **kwargs: Any) -> list[str]:
        """Short answers with LAVIS's signature and defaults (`generation.ANSWERS`):
        generation with beam 5, at most 10 tokens, the LLM family's length penalty (0
        decoder-only, -1 encoder-decoder) and the model's own `generate` defaults for the
        rest (the repetition penalty: 1.5 InstructBLIP, 1.0 BLIP-2), or
        `inference_method="rank"` over `answer_list` (`num_ans_candidates` is accepted and
        unused, as in LAVIS's InstructBLIP)."""
        if isinstance(samples.get("text_input"), str):
            samples = {**samples, "text_input": [samples["text_input"]]}
        prompts = self._prompts(samples, prompt or None)
        if inference_method == "rank":
            if not answer_list:
                raise LavisIbError("predict_answers(inference_method='rank') needs answer_list.")
            best = self.predict_class({**samples, "prompt": prompts}, list(answer_list),
                                      append_eos=kwargs.get("append_eos"))[:, 0]
            return [answer_list[int(i)] for i in best]
        if inference_method != "generate":
            raise LavisIbError(f"predict_answers: inference_method must be 'generate' or "
                               f"'rank', got '{inference_method}'.")
        if length_penalty is None:
            length_penalty = answer_length_penalty(self.adapter.is_encoder_decoder)
        return self.generate({**samples, "prompt": prompts}, num_beams=num_beams,
                             max_length=max_len, min_length=min_len,
                             length_penalty=length_penalty)

    @torch.no_grad()
    def score_candidates(self, samples: dict[str, Any], candidates: Sequence,
                         append_eos: bool | None = None, chunk_size: int = 64,
                         aggregate: str = "sum", n_segments: int = 1):
        """Each candidate's score given image and prompt: its summed log-probability, or
        with `aggregate="lavis_segment_mean"` LAVIS's decoder-only (Vicuna) score, that sum
        divided by its segment's padded length (`lavis_segment_means`; `n_segments`
        segments, the prompt padded to the batch's longest when the batch shares one
        list, as LAVIS's `predict_class` pads it).

        Candidates are scored whole: one that cannot fit the LLM's context beside the soft
        prompts and a one-token prompt is an error naming it; a prompt too long to sit
        beside the longest candidate is cut from its start (counted in `num_truncated`).
        Image, Q-Former and the prompt's key/value cache (decoder-only) or encoder output
        (encoder-decoder) are computed once per sample and shared by its candidates, which
        are scored through their token trie (`candidate_trie`): one LLM position per
        distinct candidate prefix, exact. `chunk_size` bounds memory: trie nodes per sample
        per forward (decoder-only, packed over the prompt cache) or (sample, node) rows per
        forward (encoder-decoder, level by level).

        Args:
            samples: `image` and `prompt` (or `text_input`).
            candidates: one list for the whole batch, or one list per sample (ragged ok).
            append_eos: score the EOS token after each candidate too; None: the model's
                `default_append_eos` (its LLM family's choice).
            aggregate: "sum" or "lavis_segment_mean" (decoder-only LLMs).
            n_segments: segments of `lavis_segment_mean` (results of "sum" never depend on it).

        Returns:
            (scores (B, Cmax) float32 with -inf where padded, mask (B, Cmax) bool).
        """
        n = samples["image"].shape[0]
        if aggregate not in AGGREGATES:
            raise LavisIbError(f"score_candidates: aggregate must be one of {AGGREGATES}, "
                               f"got {aggregate!r}.")
        if aggregate == "lavis_segment_mean" and self.adapter.is_encoder_decoder:
            raise LavisIbError("score_candidates: aggregate 'lavis_segment_mean' is LAVIS's "
                               "decoder-only (Vicuna) ranking; LAVIS sums an encoder-decoder "
                               "LLM's (FlanT5) candidate log-probabilities: use 'sum'.")
        if int(n_segments) < 1:
            raise LavisIbError(f"score_candidates: n_segments must be >= 1, got {n_segments}.")
        append_eos = self.default_append_eos if append_eos is None else bool(append_eos)
        per_sample = self._candidate_lists(candidates, n)
        tries = self._candidate_tries(per_sample, append_eos)
        prompts = self._prompts(samples)
        prefix = self.encode(samples["image"], prompts)
        soft = prefix.shape[1]
        self._check_candidates_fit(per_sample, tries, soft)
        rows = self.inference_rows(prompts, soft, max(trie.max_depth for trie in tries))
        flat = self.adapter.score_trie(prefix, rows, tries, max(1, int(chunk_size)))
        if aggregate == "lavis_segment_mean":
            shared = all(c is per_sample[0] for c in per_sample)
            width = max(len(r) for r in rows)   # the batch's prompts, padded to the longest
            flat = [lavis_segment_means(row, tries[i].lengths, int(n_segments),
                                        soft + (width if shared else len(rows[i])))
                    for i, row in enumerate(flat)]
        width = max(len(c) for c in per_sample)
        scores = torch.full((n, width), float("-inf"), device=flat[0].device)
        mask = torch.zeros((n, width), dtype=torch.bool, device=flat[0].device)
        for i, row in enumerate(flat):
            scores[i, :len(row)] = row
            mask[i, :len(row)] = True
        return scores, mask

    def _candidate_tries(self, per_sample: list[list[str]], append_eos: bool) -> list:
        """One token trie per sample; a list shared by the batch (or repeated across
        batches, as an evaluation split's `answer_list` is) is tokenised once."""
        tries, last = [], None
        for i, cands in enumerate(per_sample):
            if last is None or cands is not per_sample[i - 1]:
                try:
                    last = self.adapter.tries.trie(self.adapter, cands, append_eos)
                except ValueError as exc:
                    raise LavisIbError(f"score_candidates: sample {i}: {exc}; use "
                                       f"append_eos=True or drop empty strings.") from None
            tries.append(last)
        return tries

    def _check_candidates_fit(self, per_sample: list[list[str]], tries: list, soft: int) -> None:
        """Every candidate, whole, fits the LLM's context beside `soft` soft prompts and a
        one-token prompt (an LLM with relative positions, T5, sets no limit)."""
        room = self.adapter.context_room(soft, 0)
        if room is None:
            return
        for i, (cands, trie) in enumerate(zip(per_sample, tries)):
            if (i and cands is per_sample[i - 1]) or trie.max_depth <= room - 1:
                continue
            for cand, length in zip(cands, trie.lengths):
                if length > room - 1:
                    raise LavisIbError(
                        f"score_candidates: candidate {cand!r} has {length} tokens to score; the "
                        f"LLM's {room + soft}-token context holds at most {room - 1} beside "
                        f"{soft} soft prompts and a one-token prompt. Candidates are scored "
                        f"whole: shorten or drop this one.")

    @staticmethod
    def _candidate_lists(candidates: Sequence, n: int) -> list[list[str]]:
        if not candidates:
            raise LavisIbError("candidates must not be empty.")
        if all(isinstance(c, str) for c in candidates):
            return [list(candidates)] * n
        lists = [list(c) for c in candidates]
        if len(lists) != n:
            raise LavisIbError(f"candidates: {len(lists)} lists for a batch of {n}; give one "
                               f"list for all samples or one per sample.")
        for i, c in enumerate(lists):
            if not c or not all(isinstance(x, str) for x in c):
                raise LavisIbError(f"candidates[{i}] must be a non-empty list of strings.")
        return lists

    def inference_counts(self) -> dict[str, int]:
        """`num_truncated`: inference prompts cut (from the left) to the model's prompt limit
        (the LLM's context, or `max_prompt_tokens` for encoder-decoder LLMs)."""
        return {"num_truncated": self.adapter.num_truncated}

    def predict_class(self, samples: dict[str, Any], candidates: Sequence, n_segments: int = 1,
                      append_eos: bool | None = None, chunk_size: int = 64,
                      aggregate: str = "sum") -> torch.Tensor:
        """(B, Cmax) candidate indices best-first (padded slots last), as LAVIS's
        `predict_class`: the prompt template is filled from the batch and LAVIS's
        `context` / `history` / `caption` prefixes are added (`lavis_prompts`);
        `n_segments` > 1 scores the candidates in that many chunks (memory; with
        `aggregate="lavis_segment_mean"` also the segments of LAVIS's Vicuna score, see
        `score_candidates`). `append_eos` None: the model's `default_append_eos`.

        The indices point into the candidate list of each sample; map them back to labels::

            labels = ["cat", "dog", "horse"]
            order = model.predict_class({"image": images, "prompt": "What animal is this?"},
                                        labels)
            best = [labels[int(row[0])] for row in order]        # one label per image
            ranked = [[labels[int(i)] for i in row] for row in order]

        With one candidate list per sample (ragged), use that sample's list and stop at its
        length: the padded slots come last (`score_candidates` returns their mask)."""
        if int(n_segments) < 1:
            raise LavisIbError(f"predict_class: n_segments must be >= 1, got {n_segments}.")
        prompts = class_prompt_prefixes(samples, self._prompts(samples))
        if int(n_segments) > 1:
            rows = sum(len(c) for c in self._candidate_lists(candidates, len(prompts)))
            chunk_size = max(1, -(-rows // int(n_segments)))
        scores, _ = self.score_candidates({**samples, "prompt": prompts}, candidates,
                                          append_eos, chunk_size, aggregate, n_segments)
        return torch.argsort(scores, dim=-1, descending=True, stable=True)

"""What every LLM adapter shares: tokenization of instructions and targets, padding,
generation settings, and the transformers version differences (cache keyword, repetition
penalty with embedded prompts). The family-specific layouts are in `decoder_only` and
`encoder_decoder`; `families.make_adapter` picks one.
"""
from __future__ import annotations

import inspect
import logging
import warnings
from typing import Sequence

import torch
from torch import nn

from lavis_ib.models.llm.trie import TrieCache

logger = logging.getLogger(__name__)


def cache_kwarg(model: nn.Module) -> str:
    """transformers renamed `past_key_values` to `cache` (5.2x); accept both."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def run_generate(llm: nn.Module, **kwargs):
    """`llm.generate` with the repetition penalty applied to every generated token.

    The prompt is passed as embeddings, so by design the penalty sees generated tokens
    only. transformers (5.2x) skips a left-padded row's first k generated tokens when
    its prompt was padded by k (it assumes `input_ids` hold the prompt), so a padded
    batch would not return what one-at-a-time calls return; an explicit penalty
    processor, which replaces the one `generate` builds in place, has no such offset.
    """
    from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

    penalty = float(kwargs.get("repetition_penalty", 1.0))
    processors = LogitsProcessorList()
    if penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(penalty))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*repetition_penalty.*inputs_embeds.*")
        logger = logging.getLogger("transformers.generation.utils")
        level = logger.level
        logger.setLevel(logging.ERROR)   # "a custom processor takes precedence": intended
        try:
            return llm.generate(logits_processor=processors, **kwargs)
        finally:
            logger.setLevel(level)


def output_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def pad_rows(rows: Sequence[Sequence[int]], value: int, left: bool = False):
    """(ids, mask) LongTensors of `rows` padded to the longest."""
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if not r:
            continue
        sl = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, sl] = torch.as_tensor(list(r), dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


class LLMAdapter:
    """Common tokenization for both families.

    The model hands an adapter the projected query outputs ("prefix", B x P x D) and token
    ids; the adapter owns the family's token layout:

    * decoder-only (LLaMA/Vicuna, OPT, Qwen2, Mistral, Phi-3, Gemma-2, any causal LM): one
      sequence [prefix ; instruction (with BOS when the tokenizer adds one) ; target + EOS],
      loss on the target only. Sequences are left-padded, with position ids counted from
      the first real token, so a padded batch computes what one-at-a-time calls compute;
      training computes logits only for the target positions at the end.
    * encoder-decoder (FlanT5): encoder [prefix ; instruction], decoder = target + EOS.

    `generate` counts `max_length`/`min_length` in generated tokens for both families and
    passes the prompt as embeddings only, so the repetition penalty sees generated tokens
    only. `score` ranks candidates with a shared prefix: the prompt's key/value cache
    (decoder-only) or encoder output (encoder-decoder) is computed once per sample and
    reused by every candidate, in chunks.

    Args:
        llm: the frozen transformers model.
        tokenizer: its tokenizer (special tokens are taken from it, never "fixed").
        max_txt_len: instruction tokens kept (truncated from the left).
        max_output_txt_len: target tokens kept, EOS included (truncated from the right).
    """

    is_encoder_decoder = False

    def __init__(self, llm: nn.Module, tokenizer, max_txt_len: int = 128,
                 max_output_txt_len: int = 256) -> None:
        self.llm = llm
        self.tokenizer = tokenizer
        self.max_txt_len = int(max_txt_len)
        self.max_output_txt_len = int(max_output_txt_len)
        self.eos_id = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_id
        self.num_truncated = 0   # inference prompts cut to fit the context window
        self.tries = TrieCache()  # tokenised candidate tries, reused across batches

    @property
    def embed(self) -> nn.Module:
        return self.llm.get_input_embeddings()

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def tokenize_prompts(self, texts: Sequence[str], limit: int | None = None) -> list[list[int]]:
        """Instruction ids with the tokenizer's special tokens, left-truncated to `limit`
        tokens (default `max_txt_len`: the training rule; inference uses
        `inference_prompts`)."""
        limit = self.max_txt_len if limit is None else int(limit)
        return [self._left_truncate(self.tokenizer(text, add_special_tokens=True).input_ids,
                                    limit) for text in texts]

    def _left_truncate(self, ids: list[int], limit: int) -> list[int]:
        """The last `limit` ids, keeping a leading special token (BOS) when there is one."""
        if len(ids) <= limit:
            return ids
        head = ids[:1] if ids and ids[0] in self.tokenizer.all_special_ids else []
        return head + ids[len(ids) - limit + len(head):]

    def context_room(self, prefix_len: int, budget: int) -> int | None:
        """Prompt tokens that fit beside `prefix_len` soft prompts and `budget` further
        tokens in the LLM's context window; None when nothing limits the prompt."""
        return None

    def prompt_room(self, prefix_len: int, budget: int) -> int | None:
        """Prompt tokens an inference prompt may hold (`models.generation.PROMPT_LIMITS`):
        the context's room here; an encoder-decoder LLM sets its own limit."""
        return self.context_room(prefix_len, budget)

    def prompt_limit_words(self, prefix_len: int, budget: int) -> str:
        """What sets `prompt_room`, for the log line of a cut."""
        return (f"the LLM's context beside {prefix_len} soft prompts and {budget} more "
                f"tokens")

    def inference_prompts(self, texts: Sequence[str], prefix_len: int,
                          budget: int) -> list[list[int]]:
        """Whole prompts for generation and ranking, as the authors' code feeds the LLM at
        inference (`max_txt_len` applies to training only). A prompt is left-truncated
        only when it is over the prompt limit (`prompt_room`: the context window, or an
        encoder-decoder LLM's `max_prompt_tokens`); each such prompt is counted in
        `num_truncated`, and the first one is logged."""
        rows = [self.tokenizer(text, add_special_tokens=True).input_ids for text in texts]
        return self.fit_to_context(rows, prefix_len, budget)

    def fit_to_context(self, rows: Sequence[list[int]], prefix_len: int,
                       budget: int) -> list[list[int]]:
        """`inference_prompts`' limit rule on prompts already tokenized."""
        room = self.prompt_room(prefix_len, budget)
        if room is None:
            return list(rows)
        out = []
        for row in rows:
            if len(row) > room:
                if not self.num_truncated:
                    logger.warning("a %d-token prompt is over the %d tokens %s allows: its "
                                   "start is cut (%d kept); further cuts are counted in "
                                   "num_truncated", len(row), room,
                                   self.prompt_limit_words(prefix_len, budget), room)
                self.num_truncated += 1
                row = self._left_truncate(row, room)
            out.append(row)
        return out

    def tokenize_targets(self, texts: Sequence[str], append_eos: bool = True,
                         limit: int | None = None) -> list[list[int]]:
        """Target/candidate ids without special tokens, right-truncated, EOS appended."""
        limit = self.max_output_txt_len if limit is None else limit
        out = []
        for text in texts:
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
            ids = ids[: limit - 1] if append_eos else ids[:limit]
            out.append(ids + [self.eos_id] if append_eos else ids)
        return out

    def decode(self, ids: torch.Tensor) -> list[str]:
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def _embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(ids.to(self.device))

    @staticmethod
    def _generation_kwargs(use_nucleus_sampling, num_beams, max_length, min_length, top_p,
                           repetition_penalty, length_penalty, num_captions, temperature,
                           eos_id, pad_id, top_k=None, streamer=None) -> dict:
        """transformers' `generate` keywords of our settings. `top_k` None leaves the LLM's
        `generation_config.top_k` (transformers' default 50); like `top_p` and
        `temperature` it is passed only when sampling. `streamer` receives the tokens."""
        kwargs = dict(do_sample=bool(use_nucleus_sampling), num_beams=int(num_beams),
                      max_new_tokens=int(max_length), min_new_tokens=int(min_length),
                      repetition_penalty=float(repetition_penalty),
                      length_penalty=float(length_penalty),
                      num_return_sequences=int(num_captions), eos_token_id=eos_id,
                      pad_token_id=pad_id)
        if use_nucleus_sampling:
            kwargs.update(top_p=float(top_p), temperature=float(temperature))
            if top_k is not None:
                kwargs["top_k"] = int(top_k)
        if streamer is not None:
            kwargs["streamer"] = streamer
        return kwargs

    @staticmethod
    def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(target) per position, in fp32."""
        logp = torch.log_softmax(logits.float(), dim=-1)
        return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)

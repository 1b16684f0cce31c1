"""LLM adapters: how soft prompts, instruction and target tokens reach each LLM family.

The InstructBLIP model hands an adapter the projected query outputs ("prefix", B x P x D)
and token ids; the adapter owns the family's token layout:

* decoder-only (LLaMA/Vicuna): one sequence [prefix ; instruction (with BOS) ; target + EOS],
  loss on the target only. Sequences are left-padded, with position ids counted from the
  first real token, so a padded batch computes what one-at-a-time calls compute; training
  computes logits only for the target positions at the end.
* encoder-decoder (FlanT5): encoder [prefix ; instruction], decoder = target + EOS.

`generate` counts `max_length`/`min_length` in generated tokens for both families and
passes the prompt as embeddings only, so the repetition penalty sees generated tokens only.
`score` ranks candidates with a shared prefix: the prompt's key/value cache (decoder-only)
or encoder output (encoder-decoder) is computed once per sample and reused by every
candidate, in chunks.
"""
from __future__ import annotations

import inspect
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _cache_kwarg(model: nn.Module) -> str:
    """transformers renamed `past_key_values` to `cache` (5.2x); accept both."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _generate(llm: nn.Module, **kwargs):
    with warnings.catch_warnings():
        # by design the penalty sees generated tokens only (the prompt is embeddings)
        warnings.filterwarnings("ignore", message=".*repetition_penalty.*inputs_embeds.*")
        return llm.generate(**kwargs)


def _output_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _pad(rows: Sequence[Sequence[int]], value: int, left: bool = False):
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

    @property
    def embed(self) -> nn.Module:
        return self.llm.get_input_embeddings()

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def tokenize_prompts(self, texts: Sequence[str]) -> list[list[int]]:
        """Instruction ids with the tokenizer's special tokens, left-truncated."""
        out = []
        for text in texts:
            ids = self.tokenizer(text, add_special_tokens=True).input_ids
            if len(ids) > self.max_txt_len:
                # keep the leading special token (BOS) when the tokenizer adds one
                head = ids[:1] if ids and ids[0] in self.tokenizer.all_special_ids else []
                ids = head + ids[len(ids) - self.max_txt_len + len(head):]
            out.append(ids)
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
                           eos_id, pad_id) -> dict:
        kwargs = dict(do_sample=bool(use_nucleus_sampling), num_beams=int(num_beams),
                      max_new_tokens=int(max_length), min_new_tokens=int(min_length),
                      repetition_penalty=float(repetition_penalty),
                      length_penalty=float(length_penalty),
                      num_return_sequences=int(num_captions), eos_token_id=eos_id,
                      pad_token_id=pad_id)
        if use_nucleus_sampling:
            kwargs.update(top_p=float(top_p), temperature=float(temperature))
        return kwargs

    @staticmethod
    def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(target) per position, in fp32."""
        logp = torch.log_softmax(logits.float(), dim=-1)
        return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


class DecoderOnlyAdapter(LLMAdapter):
    """LLaMA/Vicuna (any `AutoModelForCausalLM`)."""

    def _sequences(self, prefix: torch.Tensor, prompts: list[list[int]],
                   targets: list[list[int]] | None, left: bool):
        """Embeddings, mask, labels of [prefix ; prompt ; target] padded on one side."""
        b, p, d = prefix.shape
        targets = targets or [[] for _ in prompts]
        lengths = [p + len(a) + len(t) for a, t in zip(prompts, targets)]
        width = max(lengths)
        embeds = prefix.new_zeros((b, width, d), dtype=self.dtype)
        mask = torch.zeros((b, width), dtype=torch.long, device=prefix.device)
        labels = torch.full((b, width), -100, dtype=torch.long, device=prefix.device)
        for i, (a, t) in enumerate(zip(prompts, targets)):
            start = width - lengths[i] if left else 0
            tokens = torch.as_tensor(a + t, dtype=torch.long, device=self.device)
            row = torch.cat([prefix[i].to(self.dtype), self._embed_ids(tokens)], dim=0)
            embeds[i, start:start + lengths[i]] = row
            mask[i, start:start + lengths[i]] = 1
            if t:
                labels[i, start + p + len(a):start + lengths[i]] = torch.as_tensor(t, device=prefix.device)
        return embeds, mask, labels

    def loss(self, prefix: torch.Tensor, prompts: list[list[int]], targets: list[list[int]]):
        """(summed token NLL, number of target tokens).

        Sequences are left-padded (position ids count from each row's first real token),
        so every row's target ends at the last position and only the last
        max(target length) + 1 positions need logits: the LM head and its fp32 softmax
        never run over the soft prompts and the instruction, which are most of the
        sequence (a 32,000-word vocabulary makes those logits the largest activation).
        """
        embeds, mask, labels = self._sequences(prefix, prompts, targets, left=True)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        keep = max(len(t) for t in targets) + 1
        if "logits_to_keep" in inspect.signature(self.llm.forward).parameters:
            logits = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                              use_cache=False, logits_to_keep=keep).logits
        else:  # a causal LM without the option: full logits, the same result
            logits = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                              use_cache=False).logits[:, -keep:]
        shift_logits, shift_labels = logits[:, :-1], labels[:, -keep + 1:]
        nll = F.cross_entropy(shift_logits.float().reshape(-1, shift_logits.shape[-1]),
                              shift_labels.reshape(-1), ignore_index=-100, reduction="sum")
        return nll, (shift_labels != -100).sum()

    def generate(self, prefix: torch.Tensor, prompts: list[list[int]], **settings) -> torch.Tensor:
        embeds, mask, _ = self._sequences(prefix, prompts, None, left=True)
        kwargs = self._generation_kwargs(eos_id=self.eos_id, pad_id=self.pad_id, **settings)
        return _generate(self.llm, inputs_embeds=embeds, attention_mask=mask, **kwargs)

    def prefix_state(self, prefix: torch.Tensor, prompts: list[list[int]]):
        """Run [prefix ; prompt] once: (per-layer (keys, values), last logits, mask)."""
        embeds, mask, _ = self._sequences(prefix, prompts, None, left=True)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(
            self.llm.forward).parameters else {}
        out = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                       use_cache=True, **extra)
        cache = _output_cache(out)
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        return layers, out.logits[:, -1].float(), mask

    def score(self, prefix: torch.Tensor, prompts: list[list[int]],
              rows: list[tuple[int, list[int]]], chunk_size: int) -> torch.Tensor:
        """Summed log-probs of each (sample index, candidate ids) row."""
        from transformers import DynamicCache

        layers, last_logits, prefix_mask = self.prefix_state(prefix, prompts)
        first_logp = torch.log_softmax(last_logits, dim=-1)
        prefix_len = prefix_mask.sum(-1)
        cache_kw = _cache_kwarg(self.llm)
        scores = []
        for start in range(0, len(rows), chunk_size):
            chunk = rows[start:start + chunk_size]
            index = torch.as_tensor([s for s, _ in chunk], device=prefix_mask.device)
            ids, cmask = _pad([c for _, c in chunk], self.pad_id)
            ids, cmask = ids.to(prefix_mask.device), cmask.to(prefix_mask.device)
            total = first_logp[index].gather(-1, ids[:, :1]).squeeze(-1)
            if ids.shape[1] > 1:
                # feed all but the last token; position j's logits predict token j + 1
                feed, fmask = ids[:, :-1], cmask[:, :-1]
                cache = DynamicCache()
                for layer_idx, (k, v) in enumerate(layers):
                    cache.update(k.index_select(0, index), v.index_select(0, index), layer_idx)
                attn = torch.cat([prefix_mask.index_select(0, index), fmask], dim=1)
                pos = prefix_len[index, None] + torch.arange(feed.shape[1], device=feed.device)
                logits = self.llm(input_ids=feed, attention_mask=attn, position_ids=pos,
                                  use_cache=True, **{cache_kw: cache}).logits
                lp = self._token_logprobs(logits, ids[:, 1:])
                total = total + (lp * cmask[:, 1:]).sum(-1)
            scores.append(total)
        return torch.cat(scores) if scores else torch.zeros(0, device=prefix.device)


class EncoderDecoderAdapter(LLMAdapter):
    """FlanT5 (any `AutoModelForSeq2SeqLM`)."""

    is_encoder_decoder = True

    def _encoder_inputs(self, prefix: torch.Tensor, prompts: list[list[int]]):
        b, p, d = prefix.shape
        ids, mask = _pad(prompts, self.pad_id)
        ids, mask = ids.to(self.device), mask.to(prefix.device)
        embeds = torch.cat([prefix.to(self.dtype), self._embed_ids(ids)], dim=1)
        mask = torch.cat([torch.ones((b, p), dtype=torch.long, device=prefix.device), mask], dim=1)
        return embeds, mask

    def _decoder_inputs(self, targets: list[list[int]]):
        start = self.llm.config.decoder_start_token_id
        start = self.pad_id if start is None else start
        ids, mask = _pad(targets, self.pad_id)
        dec = torch.cat([torch.full((ids.shape[0], 1), start, dtype=torch.long), ids[:, :-1]], 1)
        return ids.to(self.device), mask.to(self.device), dec.to(self.device)

    def loss(self, prefix: torch.Tensor, prompts: list[list[int]], targets: list[list[int]]):
        embeds, mask = self._encoder_inputs(prefix, prompts)
        ids, tmask, dec = self._decoder_inputs(targets)
        logits = self.llm(inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=dec,
                          decoder_attention_mask=tmask, use_cache=False).logits
        labels = ids.masked_fill(tmask == 0, -100)
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                              ignore_index=-100, reduction="sum")
        return nll, tmask.sum()

    def generate(self, prefix: torch.Tensor, prompts: list[list[int]], **settings) -> torch.Tensor:
        embeds, mask = self._encoder_inputs(prefix, prompts)
        kwargs = self._generation_kwargs(eos_id=self.eos_id, pad_id=self.pad_id, **settings)
        return _generate(self.llm, inputs_embeds=embeds, attention_mask=mask, **kwargs)

    def score(self, prefix: torch.Tensor, prompts: list[list[int]],
              rows: list[tuple[int, list[int]]], chunk_size: int) -> torch.Tensor:
        from transformers.modeling_outputs import BaseModelOutput

        embeds, mask = self._encoder_inputs(prefix, prompts)
        encoded = self.llm.get_encoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        scores = []
        for start in range(0, len(rows), chunk_size):
            chunk = rows[start:start + chunk_size]
            index = torch.as_tensor([s for s, _ in chunk], device=encoded.device)
            ids, tmask, dec = self._decoder_inputs([c for _, c in chunk])
            logits = self.llm(encoder_outputs=BaseModelOutput(last_hidden_state=encoded[index]),
                              attention_mask=mask[index], decoder_input_ids=dec,
                              decoder_attention_mask=tmask, use_cache=False).logits
            scores.append((self._token_logprobs(logits, ids) * tmask).sum(-1))
        return torch.cat(scores) if scores else torch.zeros(0, device=prefix.device)


def make_adapter(llm: nn.Module, tokenizer, **kwargs) -> LLMAdapter:
    """The adapter of `llm`'s family."""
    cls = EncoderDecoderAdapter if llm.config.is_encoder_decoder else DecoderOnlyAdapter
    return cls(llm, tokenizer, **kwargs)

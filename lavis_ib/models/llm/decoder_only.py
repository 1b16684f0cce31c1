"""The decoder-only adapter (Vicuna/LLaMA, OPT, any `AutoModelForCausalLM`): one sequence
[soft prompts ; instruction ; target], left-padded with position ids counted from each row's
first real token, or packed end to end in training where exact (`packing`); ranking reuses
the prompt's key/value cache and scores the candidates' token trie (`trie_decoder_only`);
`score` is the per-candidate procedure it replaced, kept as the bench's reference.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from lavis_ib.common.errors import ConfigError, LavisIbError
from lavis_ib.models.llm.trie import CandidateTrie
from lavis_ib.models.llm.base import LLMAdapter, cache_kwarg, run_generate, output_cache, pad_rows
from lavis_ib.models.llm.trie_decoder_only import score_tries
from lavis_ib.models.llm.family_traits import attention_windows
from lavis_ib.models.llm.packing import PACKING_MODES, ROW_TOKENS, pack_sequences, packs_exactly


class DecoderOnlyAdapter(LLMAdapter):
    """LLaMA/Vicuna, OPT (any `AutoModelForCausalLM`)."""

    #: `run.packing`: "auto" packs training micro-batches where the family's self-check
    #: passes, "true" requires it, "false" keeps them padded (`set_packing`).
    packing = "auto"
    #: a packed row's length cap (`packing.ROW_TOKENS`)
    row_tokens = ROW_TOKENS
    #: LLM positions (rows x row length) of the last training forward: padding included
    last_llm_positions = 0

    def set_packing(self, mode) -> bool:
        """Set `run.packing` ("auto" | "true" | "false", or a bool); returns whether
        training micro-batches will be packed. "true" on a family whose self-check fails
        raises a ConfigError."""
        mode = str(mode).lower()
        if mode not in PACKING_MODES:
            raise ConfigError(f"run.packing: '{mode}' is not one of {', '.join(PACKING_MODES)}.")
        self.packing = mode
        if mode == "true":
            ok, why = packs_exactly(self.llm)
            if not ok:
                raise ConfigError(f"run.packing is true but the LLM "
                                  f"({self.llm.config.get_text_config().model_type}) cannot "
                                  f"pack training micro-batches exactly: {why}; set "
                                  f"run.packing to auto (packs where exact) or false.")
        return self.packs()

    def packs(self) -> bool:
        """Whether training micro-batches are packed (the self-check runs once per family)."""
        return self.packing != "false" and packs_exactly(self.llm)[0]

    def context_room(self, prefix_len: int, budget: int) -> int | None:
        """Absolute positions end at `max_position_embeddings`: soft prompts, prompt and
        the generated (or scored) tokens must fit together."""
        context = getattr(self.llm.config.get_text_config(), "max_position_embeddings", None)
        if not context:
            return None
        room = int(context) - int(prefix_len) - int(budget)
        if room < 1:
            raise LavisIbError(f"{prefix_len} soft prompts and {budget} tokens to generate or "
                               f"score leave no room for a prompt in the LLM's {context}-token "
                               f"context; lower max_length or shorten the candidates.")
        return room

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
        Where the family packs (`packs`), `packed_loss` computes the same sums without
        padding.
        """
        if self.packs():
            return self.packed_loss(prefix, prompts, targets)
        embeds, mask, labels = self._sequences(prefix, prompts, targets, left=True)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        keep = max(len(t) for t in targets) + 1
        if "logits_to_keep" in inspect.signature(self.llm.forward).parameters:
            logits = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                              use_cache=False, logits_to_keep=keep).logits
        else:  # a causal LM without the option: full logits, the same result
            logits = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                              use_cache=False).logits[:, -keep:]
        self.last_llm_positions = int(embeds.shape[0] * embeds.shape[1])
        shift_logits, shift_labels = logits[:, :-1], labels[:, -keep + 1:]
        nll = F.cross_entropy(shift_logits.float().reshape(-1, shift_logits.shape[-1]),
                              shift_labels.reshape(-1), ignore_index=-100, reduction="sum")
        return nll, (shift_labels != -100).sum()

    def packed_loss(self, prefix: torch.Tensor, prompts: list[list[int]],
                    targets: list[list[int]]):
        """`loss` on packed rows (`packing.pack_sequences`): position ids restart at each
        sequence, no attention mask and no cache reach the LLM (transformers then masks
        each sequence off from the others), and logits are computed at the positions
        that predict target tokens only (one row: exactly those; several rows: the union
        of their columns)."""
        tokens = [torch.as_tensor(a + t, dtype=torch.long, device=self.device)
                  for a, t in zip(prompts, targets)]
        lengths = [len(t) for t in tokens]
        flat = self._embed_ids(torch.cat(tokens)) if sum(lengths) else None
        pieces = list(flat.split(lengths)) if flat is not None else [
            prefix.new_zeros((0, prefix.shape[2]), dtype=self.dtype) for _ in tokens]
        rows = pack_sequences(prefix, pieces, prompts, targets, cap=self.row_tokens)
        self.last_llm_positions = rows.num_positions
        if rows.target_ids.numel() == 0:
            return prefix.sum() * 0.0, rows.target_ids.new_zeros(())
        columns, where = torch.unique(rows.target_cols, return_inverse=True)
        kwargs = dict(inputs_embeds=rows.embeds, attention_mask=None,
                      position_ids=rows.positions, use_cache=False)
        if "logits_to_keep" in inspect.signature(self.llm.forward).parameters:
            logits = self.llm(**kwargs, logits_to_keep=columns).logits
        else:  # a causal LM without the option: full logits, the same result
            logits = self.llm(**kwargs).logits[:, columns]
        picked = logits[rows.target_rows, where]
        nll = F.cross_entropy(picked.float(), rows.target_ids, reduction="sum")
        return nll, rows.target_ids.new_tensor(rows.target_ids.numel())

    def generate(self, prefix: torch.Tensor, prompts: list[list[int]], **settings) -> torch.Tensor:
        embeds, mask, _ = self._sequences(prefix, prompts, None, left=True)
        kwargs = self._generation_kwargs(eos_id=self.eos_id, pad_id=self.pad_id, **settings)
        return run_generate(self.llm, inputs_embeds=embeds, attention_mask=mask, **kwargs)

    def prefix_state(self, prefix: torch.Tensor, prompts: list[list[int]]):
        """Run [prefix ; prompt] once: (per-layer (keys, values), last logits, mask).

        The cache is a plain `DynamicCache` (full layers): the one a sliding-window model
        builds for itself keeps only the last window of keys, and the candidates read
        every prompt position (their masks apply the window)."""
        from transformers import DynamicCache

        embeds, mask, _ = self._sequences(prefix, prompts, None, left=True)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(
            self.llm.forward).parameters else {}
        out = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                       use_cache=True, **{cache_kwarg(self.llm): DynamicCache()}, **extra)
        cache = output_cache(out)
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        return layers, out.logits[:, -1].float(), mask

    def score(self, prefix: torch.Tensor, prompts: list[list[int]],
              rows: list[tuple[int, list[int]]], chunk_size: int) -> torch.Tensor:
        """Summed log-probs of each (sample index, candidate ids) row."""
        from transformers import DynamicCache

        layers, last_logits, prefix_mask = self.prefix_state(prefix, prompts)
        first_logp = torch.log_softmax(last_logits, dim=-1)
        prefix_len = prefix_mask.sum(-1)
        cache_kw = cache_kwarg(self.llm)
        scores = []
        for start in range(0, len(rows), chunk_size):
            chunk = rows[start:start + chunk_size]
            index = torch.as_tensor([s for s, _ in chunk], device=prefix_mask.device)
            ids, cmask = pad_rows([c for _, c in chunk], self.pad_id)
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

    def score_trie(self, prefix: torch.Tensor, prompts: list[list[int]],
                   tries: list[CandidateTrie], chunk_size: int) -> list[torch.Tensor]:
        """Per sample, summed log-probs of its trie's candidates: the prompt runs once, the
        trie nodes run packed over its cache, at most `chunk_size` nodes per sample per
        forward (`trie_decoder_only`)."""
        layers, last_logits, prefix_mask = self.prefix_state(prefix, prompts)
        return score_tries(self.llm, cache_kwarg(self.llm), layers, last_logits, prefix_mask,
                           tries, chunk_size, self.pad_id, self.dtype,
                           attention_windows(self.llm.config))

"""Exact trie scoring for decoder-only LLMs (LLaMA, OPT): packed trie nodes over the
prompt's key/value cache.

Each forward pass feeds, per sample, one run of trie nodes as a continuation of its prompt
cache, with positions and masks that make it exact (`score_tries` says how)."""
from __future__ import annotations

from typing import Sequence

import torch

from lavis_ib.models.llm.trie import CandidateTrie, TrieChunk


def _first_logps(tries: Sequence[CandidateTrie], last_logits: torch.Tensor) -> list[torch.Tensor]:
    """Per sample, per node log-probabilities with the depth-0 nodes filled in."""
    first = torch.log_softmax(last_logits.float(), dim=-1)
    out = []
    for i, trie in enumerate(tries):
        logp = torch.zeros(trie.num_nodes, device=first.device)
        logp[trie.roots.to(first.device)] = first[i, trie.tokens[trie.roots].to(first.device)]
        out.append(logp)
    return out


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def _within_window(allowed: torch.Tensor, depth: torch.Tensor, plen: int,
                   window: int) -> torch.Tensor:
    """`allowed` restricted to keys fewer than `window` tokens back. A node at depth d sits
    at index plen + d of its sequence (the prompt, left-padded, fills 0..plen-1), so the
    distance to a prompt token at j is plen + d - j and to an ancestor at depth a, d - a."""
    r, width = depth.shape
    query = plen + depth
    keys = torch.cat([torch.arange(plen, device=depth.device).expand(r, plen), query], dim=1)
    return allowed & ((query[:, :, None] - keys[:, None, :]) < window)


def _rows(parts: list[tuple[int, TrieChunk]], prompt_len: torch.Tensor,
          prefix_mask: torch.Tensor, pad_id: int, dtype: torch.dtype,
          windows: tuple[int | None, bool] = (None, False)):
    """ids, position ids and the additive 4-D mask(s) of one packed forward (one row per
    part); with a sliding window, the windowed mask or {layer type: mask}."""
    device = prefix_mask.device
    width = max(len(chunk.nodes) for _, chunk in parts)
    r, plen = len(parts), prefix_mask.shape[1]
    ids = torch.full((r, width), pad_id, dtype=torch.long)
    depth = torch.zeros((r, width), dtype=torch.long)
    sees = torch.zeros((r, width, width), dtype=torch.bool)
    for row, (_, chunk) in enumerate(parts):
        n = len(chunk.nodes)
        ids[row, :n], depth[row, :n] = chunk.tokens, chunk.depth
        sees[row, :n, :n] = chunk.allowed
    index = torch.as_tensor([i for i, _ in parts], device=device)
    prompt_sees = prefix_mask.index_select(0, index).bool()[:, None, :].expand(r, width, plen)
    allowed = torch.cat([prompt_sees, sees.to(device)], dim=-1)
    window, per_layer_type = windows
    mask = _additive(allowed, dtype)
    if window is not None:
        near = _additive(_within_window(allowed, depth.to(device), plen, window), dtype)
        mask = {"full_attention": mask, "sliding_attention": near} if per_layer_type else near
    positions = prompt_len.index_select(0, index)[:, None] + depth.to(device)
    return ids.to(device), positions, mask, index


def _prompt_cache(layers, index: torch.Tensor, whole: bool):
    from transformers import DynamicCache

    cache = DynamicCache()
    for layer_idx, (k, v) in enumerate(layers):
        if whole:   # every sample in order: the cache layers are read, never written
            cache.update(k, v, layer_idx)
        else:
            cache.update(k.index_select(0, index), v.index_select(0, index), layer_idx)
    return cache


def score_tries(llm, cache_kw: str, layers, last_logits: torch.Tensor,
                prefix_mask: torch.Tensor, tries: Sequence[CandidateTrie], chunk_size: int,
                pad_id: int, dtype: torch.dtype,
                windows: tuple[int | None, bool] = (None, False)) -> list[torch.Tensor]:
    """Per sample, the (C_i,) summed log-probabilities of its trie's candidates.

    `layers`, `last_logits`, `prefix_mask` are the prompt state of `prefix_state` (left
    padded, one row per sample); `tries[i]` is sample i's trie (the same object when the
    batch shares one list). Each forward holds one row per sample with at most
    `chunk_size` nodes plus their context ancestors. `windows`: the LLM's sliding-window
    layout (`families.attention_windows`).

    What makes a packed run compute exactly what one candidate at a time would:

    - position ids are the prompt length plus the node's depth (not its place in the run);
    - an additive float 4-D mask (0 allowed, dtype minimum elsewhere) lets each node see the
      prompt's real tokens and exactly its own ancestors in the run; a boolean 4-D mask is
      added as 0/1 numbers by transformers' eager attention (5.24) and is silently wrong;
    - a run of nodes carries the ancestors of its first node as context, so chunking by
      `chunk_size` bounds memory without losing any ancestor;
    - an LLM with sliding-window attention (Mistral, Phi-3, Gemma-2, ...) gets the window
      applied to that mask by token distance, as its own masks would apply it; a model whose
      layers differ gets one mask per layer type.

    The logits of a node score its children; the first tokens are scored from the prompt's
    last logits. Per node one logits row, per distinct proper prefix one LLM position.
    """
    node_logp = _first_logps(tries, last_logits)
    prompt_len = prefix_mask.sum(-1)
    plans = [trie.chunks(chunk_size) for trie in tries]
    for k in range(max(len(p) for p in plans)):
        parts = [(i, plan[k]) for i, plan in enumerate(plans) if k < len(plan)]
        ids, positions, mask, index = _rows(parts, prompt_len, prefix_mask, pad_id, dtype, windows)
        cache = _prompt_cache(layers, index, whole=len(parts) == len(tries))
        logits = llm(input_ids=ids, attention_mask=mask, position_ids=positions,
                     use_cache=True, **{cache_kw: cache}).logits
        lse = torch.logsumexp(logits.float(), dim=-1)        # (rows, width): one per node
        for row, (i, chunk) in enumerate(parts):
            src = chunk.child_src.to(logits.device)
            tok = chunk.child_tokens.to(logits.device)
            picked = logits[row, src, tok].float() - lse[row, src]
            node_logp[i][chunk.child_nodes.to(logits.device)] = picked
    return [trie.path_scores(logp) for trie, logp in zip(tries, node_logp)]

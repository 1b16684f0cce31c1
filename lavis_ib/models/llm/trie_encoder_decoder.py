"""Exact trie scoring for encoder-decoder LLMs (FlanT5): the trie expanded level by level.

T5's decoder adds a relative position bias computed from positions in the fed sequence, so
packing several trie nodes into one row (as the decoder-only scorer does) would change the
bias; one token per row and node, level by level, keeps it exact (`LevelScorer`)."""
from __future__ import annotations

from typing import Sequence

import torch

from lavis_ib.models.llm.trie import CandidateTrie
from lavis_ib.models.llm.base import output_cache


class LevelScorer:
    """Scores the tries of one batch; `run` returns per-sample candidate scores.

    Each forward feeds one token per row, one row per trie node of one depth, with that
    row's self-attention cache gathered from its parent's row; every row then sees exactly
    [start ; its ancestors], as one candidate at a time would. The encoder output and the
    cross-attention keys and values are computed once per sample (the first decoder step)
    and gathered per row. Expansion is depth first over chunks of at most `chunk_size` rows,
    so at most one chunk per depth is alive: memory is bounded by `chunk_size` x depth,
    whatever the number of candidates.
    """

    def __init__(self, llm, cache_kw: str, encoded: torch.Tensor, mask: torch.Tensor,
                 tries: Sequence[CandidateTrie], chunk_size: int) -> None:
        self.llm, self.cache_kw = llm, cache_kw
        self.encoded, self.mask, self.tries = encoded, mask, list(tries)
        self.chunk = max(1, int(chunk_size))
        self.cross = None
        self.node_logp = [torch.zeros(t.num_nodes, device=encoded.device) for t in self.tries]

    def _forward(self, ids: torch.Tensor, samples: torch.Tensor, self_layers):
        """Logits (rows, V) and self-attention layers of one decoder step."""
        from transformers import DynamicCache, EncoderDecoderCache
        from transformers.modeling_outputs import BaseModelOutput

        own, cross = DynamicCache(), DynamicCache()
        for layer_idx, (k, v) in enumerate(self_layers or []):
            own.update(k, v, layer_idx)
        for layer_idx, (k, v) in enumerate(self.cross or []):
            cross.update(k.index_select(0, samples), v.index_select(0, samples), layer_idx)
        cache = EncoderDecoderCache(own, cross)   # cross filled: its keys/values are reused
        out = self.llm(encoder_outputs=BaseModelOutput(
                           last_hidden_state=self.encoded.index_select(0, samples)),
                       attention_mask=self.mask.index_select(0, samples),
                       decoder_input_ids=ids[:, None], use_cache=True,
                       **{self.cache_kw: cache})
        new = output_cache(out)
        if self.cross is None:
            self.cross = [(layer.keys, layer.values) for layer in new.cross_attention_cache.layers]
        layers = [(layer.keys, layer.values) for layer in new.self_attention_cache.layers]
        return out.logits[:, -1].float(), layers

    def _score_children(self, logits: torch.Tensor, rows: list[tuple[int, int]]):
        """Fill the node log-probabilities of the children of each (sample, node) row;
        node -1 is the decoder start (its children are the depth-0 nodes)."""
        logp = torch.log_softmax(logits, dim=-1)
        for r, (i, node) in enumerate(rows):
            trie = self.tries[i]
            kids = trie.roots if node < 0 else torch.tensor(trie.children[node])
            kids = kids.to(logp.device)
            self.node_logp[i][kids] = logp[r, trie.tokens.to(logp.device)[kids]]

    def _next_rows(self, rows: list[tuple[int, int]]):
        """(sample, child) rows for the children that have children, and their parents' rows."""
        nxt, parents = [], []
        for r, (i, node) in enumerate(rows):
            trie = self.tries[i]
            kids = trie.roots.tolist() if node < 0 else trie.children[node]
            for c in kids:
                if trie.children[c]:
                    nxt.append((i, c))
                    parents.append(r)
        return nxt, parents

    def _expand(self, rows: list[tuple[int, int]], parents: list[int], layers) -> None:
        for s in range(0, len(rows), self.chunk):
            part = rows[s:s + self.chunk]
            device = self.encoded.device
            gather = torch.as_tensor(parents[s:s + self.chunk], device=device)
            samples = torch.as_tensor([i for i, _ in part], device=device)
            ids = torch.stack([self.tries[i].tokens[n] for i, n in part]).to(device)
            own = [(k.index_select(0, gather), v.index_select(0, gather)) for k, v in layers]
            logits, new_layers = self._forward(ids, samples, own)
            self._score_children(logits, part)
            nxt, nxt_parents = self._next_rows(part)
            if nxt:
                self._expand(nxt, nxt_parents, new_layers)

    def run(self, start_id: int) -> list[torch.Tensor]:
        device = self.encoded.device
        samples = torch.arange(len(self.tries), device=device)
        ids = torch.full((len(self.tries),), start_id, dtype=torch.long, device=device)
        logits, layers = self._forward(ids, samples, None)
        roots = [(i, -1) for i in range(len(self.tries))]
        self._score_children(logits, roots)
        nxt, parents = self._next_rows(roots)
        if nxt:
            self._expand(nxt, parents, layers)
        return [trie.path_scores(logp) for trie, logp in zip(self.tries, self.node_logp)]

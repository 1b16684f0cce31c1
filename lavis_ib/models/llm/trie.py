"""The token trie of a candidate set, the unit of exact vocabulary-scale ranking.

Candidates share token prefixes and a token's log-probability depends only on the tokens
before it, so the LLM needs one position per distinct proper prefix instead of one per
candidate token; the trie is built once per candidate list (`TrieCache`), not per batch."""
from __future__ import annotations

import logging
import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch

logger = logging.getLogger(__name__)

#: the token limit handed to `tokenize_targets` for candidates: none, a candidate is
#: scored whole (one too long for the LLM's context is the caller's error to raise)
WHOLE = sys.maxsize


@dataclass
class TrieChunk:
    """One packed run of trie nodes (local positions 0..n-1, ancestors context first).

    `nodes` holds the run plus the ancestors of its first node that precede it;
    `allowed[a, b]`: local node b is node a or one of its ancestors (what a may attend to);
    `child_src`, `child_nodes`, `child_tokens`: for each child of a run node, the local
    position whose logits score it, its node index and its token id.
    """

    nodes: torch.Tensor
    tokens: torch.Tensor
    depth: torch.Tensor
    allowed: torch.Tensor
    child_src: torch.Tensor
    child_nodes: torch.Tensor
    child_tokens: torch.Tensor


class CandidateTrie:
    """The trie of a list of token-id rows (candidates), nodes in preorder.

    A candidate's score is the sum, along its trie path, of each node's log-probability
    given its parent, so only nodes with children (distinct proper prefixes) need an LLM
    position.

    Attributes: `tokens`, `parent` (-1 at depth 0), `depth` (LongTensors over nodes),
    `children` (lists), `terminal` (the node each candidate ends at; equal rows share one),
    `roots` (depth-0 nodes), `internal` (nodes with children, preorder), `lengths` (each
    candidate's token count).
    """

    def __init__(self, rows: Sequence[Sequence[int]]) -> None:
        if not rows or any(len(r) == 0 for r in rows):
            raise ValueError("CandidateTrie needs non-empty token rows")
        edges: dict = {}
        for row in rows:
            level = edges
            for tok in row:
                level = level.setdefault(int(tok), {})
        tokens, parent, depth, children, index = [], [], [], [], {}
        stack = [(tok, sub, -1, 0, (tok,)) for tok, sub in reversed(list(edges.items()))]
        while stack:
            tok, sub, par, d, path = stack.pop()
            node = len(tokens)
            index[path] = node
            tokens.append(tok)
            parent.append(par)
            depth.append(d)
            children.append([])
            if par >= 0:
                children[par].append(node)
            stack.extend((t, s, node, d + 1, path + (t,)) for t, s in reversed(list(sub.items())))
        self.tokens = torch.tensor(tokens, dtype=torch.long)
        self.parent = torch.tensor(parent, dtype=torch.long)
        self.depth = torch.tensor(depth, dtype=torch.long)
        self.children = children
        self.terminal = torch.tensor([index[tuple(int(t) for t in r)] for r in rows])
        self.roots = torch.tensor([n for n in range(len(tokens)) if parent[n] < 0])
        self.internal = [n for n in range(len(tokens)) if children[n]]
        self.max_depth = max(depth) + 1
        self.lengths = [len(r) for r in rows]
        self.num_candidate_tokens = sum(self.lengths)
        self._chunks: dict[int, list[TrieChunk]] = {}

    @property
    def num_nodes(self) -> int:
        return len(self.tokens)

    def path_scores(self, node_logp: torch.Tensor) -> torch.Tensor:
        """Each candidate's summed log-probability from per-node log-probabilities."""
        cum = node_logp.clone()
        parent = self.parent.to(cum.device)
        depth = self.depth.to(cum.device)
        for d in range(1, self.max_depth):   # parents of depth d are final before depth d
            idx = (depth == d).nonzero().squeeze(-1)
            cum[idx] += cum[parent[idx]]
        return cum[self.terminal.to(cum.device)]

    def ancestors(self, node: int) -> list[int]:
        """The ancestors of `node`, root first."""
        out = []
        node = int(self.parent[node])
        while node >= 0:
            out.append(node)
            node = int(self.parent[node])
        return out[::-1]

    def chunks(self, chunk_size: int) -> list[TrieChunk]:
        """The internal nodes in runs of at most `chunk_size` (built once per size).

        Nodes are numbered in depth-first preorder: a node's ancestors come before it, and a
        contiguous run of nodes has all its ancestors either inside the run or on the path
        to the run's first node, which is what lets the decoder-only scorer pack a bounded
        run of nodes into one forward pass and stay exact.
        """
        size = max(1, int(chunk_size))
        if size not in self._chunks:
            self._chunks[size] = [self._chunk(self.internal[s:s + size])
                                  for s in range(0, len(self.internal), size)]
        return self._chunks[size]

    def _chunk(self, run: list[int]) -> TrieChunk:
        inside = set(run)
        context = [a for a in self.ancestors(run[0]) if a not in inside]
        nodes = torch.tensor(context + run, dtype=torch.long)
        local = {int(n): i for i, n in enumerate(nodes)}
        local_parent = torch.tensor([local.get(int(self.parent[n]), -1) for n in nodes])
        n = len(nodes)
        allowed = torch.eye(n, dtype=torch.bool)
        rows, anc = torch.arange(n), local_parent.clone()
        while bool((anc >= 0).any()):   # walk every node's chain up, one level per step
            has = anc >= 0
            allowed[rows[has], anc[has]] = True
            anc = torch.where(has, local_parent[anc.clamp(min=0)], anc)
        src = [(local[p], c) for p in run for c in self.children[p]]
        child_nodes = torch.tensor([c for _, c in src], dtype=torch.long)
        return TrieChunk(nodes=nodes, tokens=self.tokens[nodes], depth=self.depth[nodes],
                         allowed=allowed, child_src=torch.tensor([s for s, _ in src]),
                         child_nodes=child_nodes, child_tokens=self.tokens[child_nodes])


class TrieCache:
    """Tokenised tries of recent candidate lists, keyed by (list, append_eos).

    An evaluation split ranking one `answer_list` hands the same list with every batch:
    its tokenisation and trie are built at the first batch and reused after. A few lists
    are kept (per-sample lists of Visual Dialog change every sample and simply rotate).
    Candidates are tokenised whole: no token limit applies to them.
    """

    def __init__(self, size: int = 8) -> None:
        self.size = int(size)
        self._tries: OrderedDict = OrderedDict()
        self.builds = 0   # tries built: once per distinct candidate list while it is cached

    def trie(self, adapter, candidates: Sequence[str], append_eos: bool) -> CandidateTrie:
        key = (tuple(candidates), bool(append_eos))
        found = self._tries.get(key)
        if found is not None:
            self._tries.move_to_end(key)
            return found
        rows = adapter.tokenize_targets(list(candidates), append_eos=append_eos, limit=WHOLE)
        empty = [c for c, r in zip(candidates, rows) if not r]
        if empty:
            raise ValueError(f"candidate {empty[0]!r} has no tokens")
        trie = CandidateTrie(rows)
        self.builds += 1
        if len(candidates) >= 100:
            logger.info("candidate trie: %d candidates, %d tokens, %d nodes (%d scored "
                        "positions)", len(candidates), trie.num_candidate_tokens,
                        trie.num_nodes, len(trie.internal))
        self._tries[key] = trie
        while len(self._tries) > self.size:
            self._tries.popitem(last=False)
        return trie

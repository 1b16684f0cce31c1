"""The ITG head: BERT's masked-LM head, whose output matrix is the Q-Former's word-embedding
table (tied, as in BERT and LAVIS), so only the transform and the output bias are its own."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lavis_ib.models.components.qformer import _ACTS


class LMHead(nn.Module):
    """dense -> activation -> LayerNorm -> (word embeddings)^T + bias."""

    def __init__(self, hidden: int, vocab: int, act: str, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.act = _ACTS[act]()
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, hidden: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """Logits (..., vocab) of hidden states (..., hidden); `embedding` (vocab, hidden)."""
        return F.linear(self.norm(self.act(self.dense(hidden))), embedding, self.bias)

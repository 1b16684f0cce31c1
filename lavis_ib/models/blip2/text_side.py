"""The Q-Former's stage-1 text side, carried frozen through stage 2.

Stage 2 never runs the text side or stage 1's ITG head, and trained they would be parameters
without gradients, which DDP refuses; LAVIS deletes them, so instruction tuning must fetch
them from the stage-1 file again (LAVIS #344). Kept frozen, exports carry the whole Q-Former."""
from __future__ import annotations

import re
from typing import Iterable

import torch
from torch import nn

#: the ITG head's local names -> LAVIS's, under `Qformer.cls.predictions.`
LM_HEAD_LAVIS = {"dense.weight": "transform.dense.weight", "dense.bias": "transform.dense.bias",
                 "norm.weight": "transform.LayerNorm.weight",
                 "norm.bias": "transform.LayerNorm.bias", "bias": "bias"}
_TEXT = re.compile(r"qformer\.(word_embeddings|position_embeddings)\."
                   r"|qformer\.layers\.\d+\.ffn_text\.")
#: a name each kind of source holds when it has the text side / the ITG head
PROBE_TEXT = "qformer.word_embeddings.weight"
PROBE_HEAD = "lm_head.dense.weight"


def is_carried(name: str) -> bool:
    """A parameter of the stage-1 text side or ITG head (frozen in stage 2).

    The text side has InstructBLIP's names (`qformer.word_embeddings`,
    `qformer.position_embeddings`, `qformer.layers.<i>.ffn_text.*`); the ITG head is
    `lm_head.*`, stage 1's name for BERT's MLM head without its output matrix (tied to the
    word embeddings): LAVIS's `Qformer.cls.predictions.{transform.dense,
    transform.LayerNorm, bias}`.
    """
    return name.startswith("lm_head.") or _TEXT.match(name) is not None


def lm_head_names(name: str) -> list[str]:
    """The names the ITG head parameter `name` (`lm_head.*`) may have in a source: ours
    (stage-1 side files) and LAVIS's."""
    local = name[len("lm_head."):]
    lavis = LM_HEAD_LAVIS.get(local)
    return [name] + ([f"Qformer.cls.predictions.{lavis}"] if lavis else [])


class CarriedLMHead(nn.Module):
    """Stage 1's ITG head (dense -> activation -> LayerNorm -> word embeddings^T + bias),
    held for export only: stage 2 never runs it."""

    def __init__(self, hidden: int, vocab: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab))


def freeze_carried(named_parameters: Iterable[tuple[str, nn.Parameter]]) -> int:
    """Freeze the carried parameters; returns how many values they hold."""
    count = 0
    for name, param in named_parameters:
        if is_carried(name):
            param.requires_grad_(False)
            count += param.numel()
    return count

"""A BERT checkpoint read into the Q-Former's text side and BLIP-2's ITG head.

BLIP-2's stage 1 starts its Q-Former from BERT-base: embeddings, self-attention and the text
feed-forward of every layer, and BERT's masked-LM head, which becomes the ITG head
(`lm_head`); this maps BERT's names onto ours (`bert_candidates`)."""
from __future__ import annotations

from typing import Iterable

import torch

from lavis_ib.models.weights.param_names import LM_HEAD_LAVIS, qformer_to_bert

_OLD_NORM = {"weight": "gamma", "bias": "beta"}


def bert_candidates(name: str) -> list[str]:
    """The BERT names one of our parameter names may have ([] when BERT has none).

    Names may carry the `bert.` prefix of `BertForMaskedLM` / `BertLMHeadModel`
    checkpoints or not, and old checkpoints call LayerNorm parameters `gamma` / `beta`.
    Cross-attention and the query feed-forward are not in BERT.
    """
    part, _, rest = name.partition(".")
    if part == "qformer":
        if ".cross_attn." in rest or ".ffn_query." in rest:
            return []
        try:
            base = [qformer_to_bert(rest, "lavis"), "bert." + qformer_to_bert(rest, "lavis")]
        except KeyError:
            return []
    elif part == "lm_head" and rest in LM_HEAD_LAVIS:
        base = ["cls.predictions." + LM_HEAD_LAVIS[rest]]
    else:
        return []
    old = []
    for candidate in base:
        head, _, leaf = candidate.rpartition(".")
        if "LayerNorm" in head and leaf in _OLD_NORM:
            old.append(f"{head}.{_OLD_NORM[leaf]}")
    return base + old


def bert_to_ours(state: dict[str, torch.Tensor],
                 our_keys: Iterable[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """({our name: tensor} of the names BERT fills, unused BERT keys)."""
    out, used = {}, set()
    for ours in our_keys:
        key = next((c for c in bert_candidates(ours) if c in state), None)
        if key is not None:
            out[ours] = state[key]
            used.add(key)
    return out, [k for k in state if k not in used]

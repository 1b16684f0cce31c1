"""Parameter-name maps between lavis_ib, Hugging Face and LAVIS checkpoints (InstructBLIP and
BLIP-2 share the names).

Every map is a function from one of *our* names to the other format's name; loading inverts
it over the model's own keys, so a name the model lacks is reported, never guessed."""
from __future__ import annotations

import re
from typing import Callable

import torch

# lavis_ib's names: `visual_encoder.*` (timm Eva = LAVIS's names), `ln_vision.*`,
# `query_tokens`, `qformer.*` (our compact Q-Former), `llm_proj.*`, `llm.*`; BLIP-2's stage 1
# adds `vision_proj.*`, `text_proj.*`, `itm_head.*`, `temp` and the ITG head `lm_head.*`
# (BERT's MLM head without its decoder matrix, which is the word-embedding table).
_QKV = {"q": "query", "k": "key", "v": "value"}
_FFN = {"ffn_text": ("intermediate", "output"), "ffn_query": ("intermediate_query", "output_query")}
#: stage-1 heads: our name -> transformers' `Blip2ForImageTextRetrieval` name (LAVIS: ours)
STAGE1_HF = {"vision_proj": "vision_projection", "text_proj": "text_projection",
             "itm_head": "itm_head"}
#: the ITG head's local names -> LAVIS's under `Qformer.cls.predictions.`
LM_HEAD_LAVIS = {"dense.weight": "transform.dense.weight", "dense.bias": "transform.dense.bias",
                 "norm.weight": "transform.LayerNorm.weight", "norm.bias": "transform.LayerNorm.bias",
                 "bias": "bias"}


def qformer_to_bert(name: str, style: str) -> str:
    """Our Q-Former-local name -> a BERT-style name.

    style "hf": transformers' (`attention.attention.query`, `embeddings.layernorm`);
    style "lavis": LAVIS's BERT (`attention.self.query`, `embeddings.LayerNorm`).
    """
    attn_inner = "attention" if style == "hf" else "self"
    emb_norm = "layernorm" if style == "hf" else "LayerNorm"
    if name.startswith(("word_embeddings.", "position_embeddings.")):
        return "embeddings." + name
    if name.startswith("embed_norm."):
        return f"embeddings.{emb_norm}." + name.split(".", 1)[1]
    m = re.fullmatch(r"layers\.(\d+)\.(self_attn|cross_attn)\.(q|k|v|out|norm)\.(\w+)", name)
    if m:
        layer, kind, part, leaf = m.groups()
        block = "attention" if kind == "self_attn" else "crossattention"
        if part in _QKV:
            return f"encoder.layer.{layer}.{block}.{attn_inner}.{_QKV[part]}.{leaf}"
        sub = "dense" if part == "out" else "LayerNorm"
        return f"encoder.layer.{layer}.{block}.output.{sub}.{leaf}"
    m = re.fullmatch(r"layers\.(\d+)\.(ffn_text|ffn_query)\.(fc1|fc2|norm)\.(\w+)", name)
    if m:
        layer, kind, part, leaf = m.groups()
        inter, out = _FFN[kind]
        if part == "fc1":
            return f"encoder.layer.{layer}.{inter}.dense.{leaf}"
        return f"encoder.layer.{layer}.{out}.{'dense' if part == 'fc2' else 'LayerNorm'}.{leaf}"
    raise KeyError(f"no BERT name for Q-Former parameter '{name}'")


def vision_to_hf(name: str) -> str:
    """Our (timm Eva) ViT-local name -> transformers' `vision_model.*` name (q/v biases map
    to the fused `qkv.bias`, handled by `fuse_qkv_bias`)."""
    simple = {"cls_token": "embeddings.class_embedding", "pos_embed": "embeddings.position_embedding"}
    if name in simple:
        return simple[name]
    if name.startswith("patch_embed.proj."):
        return "embeddings.patch_embedding." + name.rsplit(".", 1)[1]
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
    if not m:
        raise KeyError(f"no Hugging Face name for ViT parameter '{name}'")
    layer, rest = m.groups()
    rename = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.qkv": "self_attn.qkv",
              "attn.proj": "self_attn.projection", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
              "attn.q_bias": "self_attn.qkv.bias", "attn.v_bias": "self_attn.qkv.bias"}
    head, leaf = (rest.rsplit(".", 1) if rest not in ("attn.q_bias", "attn.v_bias") else (rest, ""))
    mapped = rename.get(head)
    if mapped is None:
        raise KeyError(f"no Hugging Face name for ViT parameter '{name}'")
    return f"encoder.layers.{layer}.{mapped}" + (f".{leaf}" if leaf else "")


def to_hf(name: str) -> str:
    """Our model name -> `InstructBlipForConditionalGeneration` name."""
    part, _, rest = name.partition(".")
    if part == "visual_encoder":
        return "vision_model." + vision_to_hf(rest)
    if part == "ln_vision":
        return "vision_model.post_layernorm." + rest
    if part == "qformer":
        return "qformer." + qformer_to_bert(rest, "hf")
    if part == "llm_proj":
        return "language_projection." + rest
    if part == "llm":
        return "language_model." + rest
    if name == "query_tokens":
        return name
    if part in STAGE1_HF:   # Blip2ForImageTextRetrieval (it has no `temp`, no ITG head)
        return f"{STAGE1_HF[part]}.{rest}"
    raise KeyError(f"no Hugging Face name for '{name}'")


def to_lavis(name: str, t5: bool) -> str:
    """Our model name -> LAVIS InstructBLIP name (the LLM is not part of LAVIS files)."""
    part, _, rest = name.partition(".")
    if part == "qformer":
        return "Qformer.bert." + qformer_to_bert(rest, "lavis")
    if part == "llm_proj":
        return ("t5_proj." if t5 else "llm_proj.") + rest
    if part in ("visual_encoder", "ln_vision", *STAGE1_HF) or name in ("query_tokens", "temp"):
        return name
    if part == "lm_head" and rest in LM_HEAD_LAVIS:   # LAVIS keeps BERT's MLM head as Qformer.cls
        return "Qformer.cls.predictions." + LM_HEAD_LAVIS[rest]
    raise KeyError(f"no LAVIS name for '{name}'")


def fuse_qkv_bias(q_bias: torch.Tensor, v_bias: torch.Tensor) -> torch.Tensor:
    """transformers' fused bias: [q ; 0 (keys have no bias) ; v]."""
    return torch.cat([q_bias, torch.zeros_like(q_bias), v_bias])


def hf_state_to_ours(hf_state: dict, our_keys: list[str]) -> tuple[dict, list[str]]:
    """(our state dict, unexpected HF keys) from an HF InstructBLIP state dict."""
    inverse = {}
    for key in our_keys:
        try:
            inverse.setdefault(to_hf(key), []).append(key)
        except KeyError:
            continue
    out, used = {}, set()
    for hf_key, value in hf_state.items():
        for ours in inverse.get(hf_key, []):
            if value is None:          # names only (see `checkpoint_keys`)
                value_ = None
            elif ours.endswith("attn.q_bias"):
                value_ = value[: value.shape[0] // 3]
            elif ours.endswith("attn.v_bias"):
                value_ = value[2 * value.shape[0] // 3:]
            else:
                value_ = value
            out[ours] = value_
            used.add(hf_key)
    return out, [k for k in hf_state if k not in used]


def ours_to_hf_state(state: dict, hf_name: Callable[[str], str] = to_hf) -> dict:
    """An HF state dict from ours (fusing the ViT q/v biases), under `hf_name`'s names:
    InstructBLIP's by default, BLIP-2's with `weights.blip2.hf_blip2_name`."""
    out = {}
    for key, value in state.items():
        if key.endswith("attn.v_bias"):
            continue
        if key.endswith("attn.q_bias"):
            value = fuse_qkv_bias(value, state[key[: -len("q_bias")] + "v_bias"])
        out[hf_name(key)] = value
    return out

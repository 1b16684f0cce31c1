"""The one reader of BLIP-2 weights, in every format, into lavis_ib's parameter names.

BLIP-2 models load through it and InstructBLIP's `init_from` reads its BLIP-2 sources
through the same functions, so a BLIP-2 checkpoint means one thing whichever model reads
it (the formats: `read_source`)."""
from __future__ import annotations

import json
import logging
import math
import os
import re
from typing import Iterable

import torch
import torch.nn.functional as F

from lavis_ib.common.errors import LavisIbError
from lavis_ib.models.weights.files import read_pth, read_state_dict
from lavis_ib.models.weights.hub import HUB_ID, resolve_dir
from lavis_ib.models.weights.load_report import LoadReport, load_into
from lavis_ib.models.weights.param_names import to_hf, to_lavis

logger = logging.getLogger(__name__)
PROJECTIONS = ("opt_proj", "t5_proj", "llm_proj")
POS_EMBED = "visual_encoder.pos_embed"
DIR_KINDS = {"blip-2": "hf_blip2", "instructblip": "hf_instructblip", "bert": "bert"}


def hf_blip2_name(name: str) -> str:
    """Our name -> transformers' BLIP-2 name (its Q-Former keeps the query LayerNorm at
    `qformer.layernorm`, and the stage-1 retrieval model its text embeddings at the top)."""
    hf = to_hf(name)
    if hf.startswith("qformer.embeddings.layernorm."):
        return hf.replace("qformer.embeddings.layernorm.", "qformer.layernorm.")
    if hf.startswith("qformer.embeddings."):
        return hf[len("qformer."):]
    return hf


def lavis_names(name: str) -> list[str]:
    """Our name -> the LAVIS names it may have (the projection's name varies by LLM)."""
    if name.startswith("llm_proj."):
        leaf = name.split(".", 1)[1]
        return [f"{p}.{leaf}" for p in PROJECTIONS]
    return [to_lavis(name, t5=False)]


def _hf_value(name: str, value: torch.Tensor) -> torch.Tensor:
    """transformers fuses the ViT's q/v biases into `qkv.bias` = [q ; 0 ; v]. A None
    value (names only, from safetensors headers) stays None."""
    if value is None:
        return None
    if name.endswith("attn.q_bias"):
        return value[: value.shape[0] // 3]
    if name.endswith("attn.v_bias"):
        return value[2 * value.shape[0] // 3:]
    return value


def to_ours(kind: str, state: dict, our_keys: Iterable[str]) -> tuple[dict, list[str]]:
    """(our state dict, unused source keys) of a source `state` of `kind` ("lavis",
    "hf_blip2", "hf_instructblip", "vit": eva_vit_g.pth). Only `our_keys` are filled."""
    used, out = set(), {}
    for ours in our_keys:
        if kind == "vit":
            if not ours.startswith("visual_encoder."):
                continue
            candidates = [ours[len("visual_encoder."):]]
        else:
            try:
                candidates = (lavis_names(ours) if kind == "lavis" else
                              [hf_blip2_name(ours)] if kind == "hf_blip2" else [to_hf(ours)])
            except KeyError:
                continue
        key = next((c for c in candidates if c in state), None)
        if key is None:
            continue
        out[ours] = _hf_value(ours, state[key]) if kind.startswith("hf_") else state[key]
        used.add(key)
    return out, [k for k in state if k not in used]


def source_kind(path: str) -> tuple[str, str]:
    """(kind, resolved path) of a checkpoint path or hub id: a directory's `model_type`
    decides (BLIP-2, InstructBLIP, BERT); a file is LAVIS's when it holds `Qformer.*`."""
    path = os.path.expanduser(str(path))
    if not os.path.exists(path) and HUB_ID.match(path):
        path = resolve_dir(path, "checkpoint")   # local HF cache, else a clear error
    if os.path.isdir(path):
        cfg_path = os.path.join(path, "config.json")
        if not os.path.isfile(cfg_path):
            raise LavisIbError(f"'{path}' has no config.json.")
        with open(cfg_path) as f:
            model_type = json.load(f).get("model_type")
        if model_type not in DIR_KINDS:
            raise LavisIbError(f"'{path}' is a '{model_type}' checkpoint; expected a BLIP-2, "
                               f"InstructBLIP or BERT directory.")
        return DIR_KINDS[model_type], path
    return "file", path


def read_source(path: str, what: str) -> tuple[str, dict[str, torch.Tensor]]:
    """(kind, raw state) of a BLIP-2 / InstructBLIP / BERT checkpoint (see `source_kind`).

    Formats:

    * LAVIS `.pth` (`blip2_pretrained_opt2.7b.pth`, `blip2_pretrained_flant5xl.pth`, the
      `blip2_caption_*.pth` files, stage-1 `blip2_pretrained.pth`; also InstructBLIP's):
      `query_tokens`, `Qformer.bert.*`, `ln_vision.*`, the projection under `opt_proj.*`,
      `t5_proj.*` or `llm_proj.*`, and (fine-tuned caption models) `visual_encoder.*`;
    * Hugging Face directories: `Blip2ForConditionalGeneration` (stage 2: `qformer.*`
      without embeddings, `qformer.layernorm`), `Blip2ForImageTextRetrieval` (stage 1,
      top-level `embeddings.*`) and InstructBLIP ones;
    * `eva_vit_g.pth`: the ViT without its `visual_encoder.` prefix.

    Raises:
        LavisIbError: naming `what`, for a file that is neither LAVIS's nor BERT's.
    """
    kind, path = source_kind(path)
    if kind != "file":
        return kind, read_state_dict(path)
    state = read_pth(path, what)
    if any(k.startswith("Qformer.") for k in state):
        return "lavis", state
    if any(k.startswith(("bert.", "embeddings.word_embeddings")) for k in state):
        return "bert", state
    raise LavisIbError(f"{what}='{path}' is neither a LAVIS BLIP-2 checkpoint "
                       f"(Qformer.bert.*) nor a BERT checkpoint.")


def resample_pos_embed(pos_embed: torch.Tensor, num_patches: int) -> torch.Tensor:
    """(1, 1 + N, D) ViT position embedding -> (1, 1 + num_patches, D): the patch grid
    resampled bicubically (square grids), the class token's entry kept."""
    extra = pos_embed.shape[1] - int(math.isqrt(pos_embed.shape[1] - 1)) ** 2
    old = int(math.isqrt(pos_embed.shape[1] - extra))
    new = int(math.isqrt(num_patches))
    if old * old + extra != pos_embed.shape[1] or new * new != num_patches:
        raise LavisIbError(f"cannot resample a position embedding of {pos_embed.shape[1]} "
                           f"tokens to {num_patches} patches: the grids must be square.")
    head, grid = pos_embed[:, :extra], pos_embed[:, extra:]
    dim = grid.shape[-1]
    grid = grid.reshape(1, old, old, dim).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new * new, dim).to(pos_embed.dtype)
    return torch.cat([head, grid], dim=1)


def fit_pos_embed(state: dict, model_state: dict, source: str) -> list[str]:
    """Resample `state`'s ViT position embedding in place when its length differs from
    the model's. Returns the resampled names (for the load report).

    As LAVIS does when it loads a 224-pixel ViT into its 364-pixel caption models; each
    resampling is logged and listed in the load report.
    """
    if POS_EMBED not in state or POS_EMBED not in model_state:
        return []
    have, want = state[POS_EMBED], model_state[POS_EMBED]
    if have.shape == want.shape:
        return []
    state[POS_EMBED] = resample_pos_embed(have, want.shape[1] - 1)
    logger.warning("%s: ViT position embedding resampled from %d to %d tokens (the "
                   "checkpoint's image size differs from the model's)", source,
                   have.shape[1], want.shape[1])
    return [POS_EMBED]


def load_vit_file(model, path: str, resample: bool = True) -> LoadReport:
    """`eva_vit_g.pth` (`vit_weights`) into `model.visual_encoder`: blocks past the model's
    depth dropped (EVA ViT-g has 40, BLIP-2 and InstructBLIP use 39) and listed as the
    report's `dropped`; with `resample`, the position embedding resampled to the model's
    image size (`fit_pos_embed`), listed as `resampled`.

    Raises:
        LavisIbError: the file lacks a ViT weight the model has.
    """
    depth = len(model.visual_encoder.blocks)
    state, dropped = {}, []
    for key, value in read_pth(path, "vit_weights").items():
        key = key[len("visual_encoder."):] if key.startswith("visual_encoder.") else key
        m = re.match(r"blocks\.(\d+)\.", key)
        if m and int(m.group(1)) >= depth:
            dropped.append(key)
        else:
            state["visual_encoder." + key] = value
    resampled = fit_pos_embed(state, model.state_dict(), f"vit_weights={path}") if resample else []
    expected = [k for k in model.state_dict() if k.startswith("visual_encoder.")]
    report = load_into(model, state, f"vit_weights={path}", expected=expected)
    if report.missing:
        raise LavisIbError(f"vit_weights='{path}' lacks {len(report.missing)} ViT weights, e.g. "
                           f"{', '.join(report.missing[:5])}; is it eva_vit_g.pth?")
    report.dropped, report.resampled = dropped, resampled  # type: ignore[attr-defined]
    return report

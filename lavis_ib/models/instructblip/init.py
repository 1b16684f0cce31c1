"""Initialising the trainable parts for instruction tuning (`model.init_from`).

Sources are applied in order and the first source that has a parameter fills it; later
sources only fill what is still missing (so `[blip2_stage2, bert]` takes the query side
from BLIP-2 and the Q-Former's text side from BERT, as LAVIS does). Recognised sources:

* a Hugging Face `Blip2ForImageTextRetrieval` directory or hub id (stage 1: query tokens, complete
  Q-Former incl. word/position embeddings, `ln_vision`) or `Blip2ForConditionalGeneration`
  directory (stage 2: query side of the Q-Former, `ln_vision`, projection);
* a Hugging Face InstructBLIP directory;
* a LAVIS BLIP-2 / InstructBLIP .pth (`Qformer.bert.*`, `query_tokens`, `ln_vision.*`,
  `llm_proj`/`t5_proj`/`opt_proj`);
* a BERT checkpoint (directory or file; `bert.` prefix optional) for the text side:
  embeddings, self-attention and text FFNs. A BERT vocabulary one token shorter than the
  Q-Former's (no `[DEC]`) fills the rows it has.

Tensors whose shape does not fit (e.g. the projection of a BLIP-2 for another LLM) are
skipped and reported. A trainable parameter left unfilled is an error unless
`allow_random_init=True`. Returns {source: [filled parameter names]} plus "unfilled".
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Sequence

import torch

from lavis_ib.common.errors import LavisIbError
from lavis_ib.models.components.hub import HUB_ID, resolve_dir
from lavis_ib.models.instructblip.hf_format import read_state_dict
from lavis_ib.models.instructblip.lavis_format import load_pth
from lavis_ib.models.instructblip.names import qformer_to_bert, to_hf, to_lavis

logger = logging.getLogger(__name__)
TRAINABLE = ("query_tokens", "qformer", "ln_vision", "llm_proj")


def _hf_blip2_name(name: str) -> str:
    hf = to_hf(name)
    if hf.startswith("qformer.embeddings.layernorm."):
        return hf.replace("qformer.embeddings.layernorm.", "qformer.layernorm.")
    if hf.startswith("qformer.embeddings."):
        return hf[len("qformer."):]
    return hf


def _bert_name(name: str) -> str:
    if not name.startswith("qformer."):
        raise KeyError(name)
    rest = name[len("qformer."):]
    if ".cross_attn." in rest or ".ffn_query." in rest:
        raise KeyError(name)   # BERT has no cross-attention or query FFN
    return qformer_to_bert(rest, "lavis")


def _lavis_names(name: str) -> list[str]:
    if name.startswith("llm_proj."):
        leaf = name.split(".", 1)[1]
        return [f"{p}.{leaf}" for p in ("llm_proj", "t5_proj", "opt_proj")]
    return [to_lavis(name, t5=False)]


def _read_source(path: str) -> tuple[str, dict[str, torch.Tensor]]:
    """(kind, state) of a source path."""
    path = os.path.expanduser(str(path))
    if not os.path.exists(path) and HUB_ID.match(path):
        path = resolve_dir(path, "init_from")   # a hub id: local HF cache, else a clear error
    if os.path.isdir(path):
        cfg_path = os.path.join(path, "config.json")
        if not os.path.isfile(cfg_path):
            raise LavisIbError(f"init_from: '{path}' has no config.json.")
        with open(cfg_path) as f:
            model_type = json.load(f).get("model_type")
        kinds = {"blip-2": "hf_blip2", "instructblip": "hf_instructblip", "bert": "bert"}
        if model_type not in kinds:
            raise LavisIbError(f"init_from: '{path}' is a '{model_type}' checkpoint; expected a "
                               f"BLIP-2, InstructBLIP or BERT directory.")
        return kinds[model_type], read_state_dict(path)
    if not os.path.isfile(path):
        raise LavisIbError(f"init_from: '{path}' does not exist.")
    state = load_pth(path, "init_from")
    if any(k.startswith("Qformer.") for k in state):
        return "lavis", state
    if any(k.startswith(("bert.", "embeddings.word_embeddings")) for k in state):
        return "bert", state
    raise LavisIbError(f"init_from: '{path}' is neither a LAVIS BLIP-2 checkpoint "
                       f"(Qformer.bert.*) nor a BERT checkpoint.")


def _namer(kind: str) -> Callable[[str], list[str]]:
    if kind == "hf_blip2":
        return lambda n: [_hf_blip2_name(n)]
    if kind == "hf_instructblip":
        return lambda n: [to_hf(n)]
    if kind == "lavis":
        return _lavis_names
    return lambda n: [_bert_name(n), "bert." + _bert_name(n)]


def init_from(model, sources: Sequence[Any], allow_random_init: bool = False) -> dict:
    """See the module docstring."""
    params = {n: p for n, p in model.named_parameters() if n.split(".")[0] in TRAINABLE}
    filled: dict[str, str] = {}
    report: dict[str, Any] = {}
    for source in sources:
        path = source.get("path") if isinstance(source, dict) else source
        kind, state = _read_source(path)
        namer = _namer(kind)
        got, skipped = [], []
        for name, param in params.items():
            if name in filled:
                continue
            try:
                candidates = namer(name)
            except KeyError:
                continue
            key = next((c for c in candidates if c in state), None)
            if key is None:
                continue
            value = state[key]
            with torch.no_grad():
                if value.shape == param.shape:
                    param.copy_(value.to(param.dtype))
                elif (name == "qformer.word_embeddings.weight" and value.dim() == 2
                      and value.shape[1] == param.shape[1] and value.shape[0] < param.shape[0]):
                    param[: value.shape[0]].copy_(value.to(param.dtype))  # new tokens ([DEC]) keep init
                else:
                    skipped.append(f"{name} {tuple(value.shape)}->{tuple(param.shape)}")
                    continue
            filled[name] = str(path)
            got.append(name)
        report[str(path)] = {"kind": kind, "filled": got, "shape_mismatch": skipped}
        logger.info("init_from %s (%s): filled %d tensors, skipped %d of another shape",
                    path, kind, len(got), len(skipped))
    unfilled = [n for n in params if n not in filled]
    report["unfilled"] = unfilled
    if unfilled and not allow_random_init:
        raise LavisIbError(f"init_from left {len(unfilled)} trainable parameters uninitialised, "
                           f"e.g. {', '.join(unfilled[:5])}; add a source (e.g. a BERT "
                           f"checkpoint for the Q-Former's text side) or set allow_random_init.")
    model.init_report = report
    return report

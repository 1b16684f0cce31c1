"""Initialising the trainable parts for instruction tuning (`model.init_from`).

Instruction tuning starts from BLIP-2 (and BERT for the text side stage 2 dropped), read
from any of the files that hold them, with every parameter left unfilled named rather than
silently random (`init_from`)."""
from __future__ import annotations

import logging
from typing import Any, Sequence

import torch

from lavis_ib.common.errors import LavisIbError
from lavis_ib.models.weights.blip2 import read_source, to_ours
from lavis_ib.models.weights.param_names import qformer_to_bert

logger = logging.getLogger(__name__)
TRAINABLE = ("query_tokens", "qformer", "ln_vision", "llm_proj")


def _bert_name(name: str) -> str:
    if not name.startswith("qformer."):
        raise KeyError(name)
    rest = name[len("qformer."):]
    if ".cross_attn." in rest or ".ffn_query." in rest:
        raise KeyError(name)   # BERT has no cross-attention or query FFN
    return qformer_to_bert(rest, "lavis")


def _bert_to_ours(state: dict, names: Sequence[str]) -> dict:
    out = {}
    for name in names:
        try:
            candidates = [_bert_name(name), "bert." + _bert_name(name)]
        except KeyError:
            continue
        key = next((c for c in candidates if c in state), None)
        if key is not None:
            out[name] = state[key]
    return out


def source_state(path: str, names: Sequence[str]) -> tuple[str, dict]:
    """(kind, {our name: tensor}) of one source: BLIP-2 and InstructBLIP checkpoints go
    through `weights.blip2`, the reader BLIP-2 models load with."""
    kind, state = read_source(path, "init_from")
    if kind == "bert":
        return kind, _bert_to_ours(state, names)
    return kind, to_ours(kind, state, names)[0]


def init_from(model, sources: Sequence[Any], allow_random_init: bool = False) -> dict:
    """Fill `model`'s trainable parameters from `sources`, in order.

    Sources are applied in order and the first source that has a parameter fills it; later
    sources only fill what is still missing (so `[blip2_stage2, bert]` takes the query side
    from BLIP-2 and the Q-Former's text side from BERT, as LAVIS does). Recognised sources:

    * a Hugging Face `Blip2ForImageTextRetrieval` directory or hub id (stage 1: query
      tokens, complete Q-Former incl. word/position embeddings, `ln_vision`) or
      `Blip2ForConditionalGeneration` directory (stage 2: query side of the Q-Former,
      `ln_vision`, projection);
    * a Hugging Face InstructBLIP directory;
    * a LAVIS BLIP-2 / InstructBLIP .pth (`Qformer.bert.*`, `query_tokens`, `ln_vision.*`,
      `llm_proj`/`t5_proj`/`opt_proj`), e.g. the paper's route for Vicuna: LAVIS's
      `blip2_pretrained_vicuna7b.pth` (stage 2: query side and projection) then stage 1's
      `blip2_pretrained.pth` for the text side stage 2 dropped (LAVIS #344);
    * a lavis_ib BLIP-2 stage-2 export: the `Blip2ForConditionalGeneration` directory with the
      stage-1 text side the model carried beside it (`lavis_ib_qformer_text.safetensors`,
      read with the directory), so it fills every trainable parameter;
    * a BERT checkpoint (directory or file; `bert.` prefix optional) for the text side:
      embeddings, self-attention and text FFNs. A BERT vocabulary one token shorter than the
      Q-Former's (no `[DEC]`) fills the rows it has.

    BLIP-2 and InstructBLIP checkpoints are read by `weights.blip2`, the reader
    BLIP-2 models load with, so both models see the same tensors in a BLIP-2 file.

    Tensors whose shape does not fit (e.g. the projection of a BLIP-2 for another LLM) are
    skipped and reported. A trainable parameter left unfilled is an error unless
    `allow_random_init=True`, and then logged as the deviation it is (a random projection
    above all). Returns {source: [filled parameter names]} plus "unfilled".
    """
    params = {n: p for n, p in model.named_parameters() if n.split(".")[0] in TRAINABLE}
    filled: dict[str, str] = {}
    report: dict[str, Any] = {}
    for source in sources:
        path = source.get("path") if isinstance(source, dict) else source
        kind, state = source_state(path, [n for n in params if n not in filled])
        got, skipped = [], []
        for name, value in state.items():
            param = params[name]
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
    if unfilled:
        _log_random_start(unfilled)
    model.init_report = report
    return report


def _log_random_start(unfilled: Sequence[str]) -> None:
    """A random start is a deviation from the paper's initialisation: say which one."""
    projection = [n for n in unfilled if n.startswith("llm_proj.")]
    if projection:
        logger.warning("init_from: the projection to the LLM (%s) starts random: no source is a "
                       "BLIP-2 stage-2 checkpoint of this LLM. The paper starts instruction "
                       "tuning from one (for Vicuna: the authors' own stage 2, LAVIS #292/#344); "
                       "this run deviates from it", projection)
    rest = [n for n in unfilled if n not in projection]
    if rest:
        logger.warning("init_from: %d trainable parameters keep their random initialisation "
                       "(allow_random_init), e.g. %s", len(rest), rest[:5])

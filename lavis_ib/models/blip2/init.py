"""Initialising a BLIP-2 stage-2 model for training (`model.init_from`), above all from
stage 1.

Stage 2 starts from stage 1's Q-Former as LAVIS's does, from any of the files that hold one,
with every parameter left unfilled named rather than silently random (`init_from`)."""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import torch

from lavis_ib.common.errors import LavisIbError
from lavis_ib.models.blip2.text_side import is_carried, lm_head_names
from lavis_ib.models.components.qformer_llm import TRAINABLE_PARTS
from lavis_ib.models.weights.blip2 import read_source, to_ours

logger = logging.getLogger(__name__)
NEW_IN_STAGE2 = "llm_proj."

Reader = Callable[[str], tuple[str, dict]]


def source_state(kind: str, raw: dict, names: Sequence[str]) -> tuple[dict, list[str]]:
    """({our name: tensor}, unused source keys) of one source for `names`: the shared
    BLIP-2 reader, plus the ITG head under our or LAVIS's names."""
    if kind == "bert":
        raise LavisIbError("a BERT checkpoint holds no BLIP-2 weights; stage 2 starts from a "
                           "stage-1 (or stage-2) BLIP-2 checkpoint.")
    state, unused = to_ours(kind, raw, [n for n in names if not n.startswith("lm_head.")])
    left = set(unused)
    for name in names:
        if name.startswith("lm_head."):
            key = next((k for k in lm_head_names(name) if k in raw), None)
            if key is not None:
                state[name] = raw[key]
                left.discard(key)
    return state, [k for k in unused if k in left]


def holds(reader: Reader, sources: Sequence[Any], probe: str,
          shape: tuple[int, ...] | None = None) -> bool:
    """Whether any source has the parameter `probe` (our name), of `shape` when given:
    the text side and the ITG head are built only when a source will fill them (a
    leftover tensor of another shape is no text side)."""
    for source in sources:
        kind, raw = reader(_path(source))
        found = source_state(kind, raw, [probe])[0] if kind != "bert" else {}
        if probe in found and (shape is None or tuple(found[probe].shape) == tuple(shape)):
            return True
    return False


def _path(source: Any) -> str:
    return str(source.get("path") if isinstance(source, dict) else source)


def init_from(model, sources: Sequence[Any], allow_random_init: bool = False,
              reader: Reader | None = None) -> dict:
    """Fill `model`'s trainable (and carried) parameters from `sources`, in order.

    Sources are applied in order; the first source that has a parameter fills it. What they
    fill: the query tokens, the Q-Former (its query side, and the text side the model carries
    when it was built from a source holding one, `text_side`), `ln_vision`, the projection and
    stage 1's ITG head (`lm_head`, carried). Recognised sources, read by the BLIP-2 reader
    every model shares (`weights.blip2`):

    * stage 1: LAVIS's `blip2_pretrained.pth` (`Qformer.bert.*` with the text side,
      `Qformer.cls.predictions.*` the ITG head, `query_tokens`, `ln_vision`; also `vision_proj`,
      `text_proj`, `itm_head`, `temp`, which stage 2 does not use: reported as unused),
      transformers' `Blip2ForImageTextRetrieval` directories and lavis_ib's stage-1 exports
      (the same directory with `lm_head.*` in a side file);
    * stage 2: LAVIS's `blip2_pretrained_*.pth` (projection as `opt_proj`, `t5_proj` or
      `llm_proj`), `Blip2ForConditionalGeneration` directories, InstructBLIP files.

    The projection is new in stage 2: left unfilled (stage 1 has none) it keeps its random
    initialisation, which is logged, as LAVIS's stage 2 starts it. Any other trainable
    parameter left unfilled is an error unless `allow_random_init`. Returns {source: report}
    plus "unfilled" and "new_in_stage2".
    """
    read = reader or (lambda path: read_source(path, "init_from"))
    params = {n: p for n, p in model.named_parameters()
              if n.split(".")[0] in TRAINABLE_PARTS or is_carried(n)}
    filled: dict[str, str] = {}
    report: dict[str, Any] = {}
    for source in sources:
        path = _path(source)
        kind, raw = read(path)
        state, unused = source_state(kind, raw, [n for n in params if n not in filled])
        got, skipped = [], []
        for name, value in state.items():
            param = params[name]
            if value.shape != param.shape:
                skipped.append(f"{name}: {tuple(value.shape)}->{tuple(param.shape)}")
                continue
            with torch.no_grad():
                param.copy_(value.to(param.dtype))
            filled[name] = path
            got.append(name)
        report[path] = {"kind": kind, "filled": got, "shape_mismatch": skipped, "unused": unused}
        logger.info("init_from %s (%s): filled %d tensors, skipped %d of another shape, "
                    "%d unused (e.g. %s)", path, kind, len(got), len(skipped), len(unused),
                    unused[:4])
    unfilled = [n for n in params if n not in filled]
    new = [n for n in unfilled if n.startswith(NEW_IN_STAGE2)]
    if new:
        logger.warning("init_from: the projection to the LLM (%s) starts random: no source "
                       "holds one for this LLM, as when stage 2 starts from stage 1", new)
    missing = [n for n in unfilled if n not in new]
    report["unfilled"], report["new_in_stage2"] = missing, new
    if missing and not allow_random_init:
        raise LavisIbError(f"init_from left {len(missing)} trainable parameters uninitialised, "
                           f"e.g. {', '.join(missing[:5])}; give a BLIP-2 stage-1 or stage-2 "
                           f"checkpoint that holds them, or set allow_random_init.")
    if missing:
        logger.warning("init_from: %d parameters keep their random initialisation "
                       "(allow_random_init), e.g. %s", len(missing), missing[:5])
    model.init_report = report
    return report

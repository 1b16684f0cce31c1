"""Packed training micro-batches for decoder-only LLMs: a micro-batch's [soft prompts ;
instruction ; target] sequences end to end in a few rows, position ids restarting per
sequence, no padding. transformers masks packed sequences apart only without a 2-D mask and
a cache, and not every family passes positions to its mask: `packs_exactly` checks a family
on a tiny copy of its config (packed against one sequence at a time) before it packs.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)

#: A packed row's length cap in positions (never below the micro-batch's longest sequence).
#: A row's attention grows with the square of its length; at this size it stays a small
#: share of a 7B LLM's step while a micro-batch of short VQA samples fits in one row.
ROW_TOKENS = 1024

#: `run.packing` values: "auto" packs where the family's self-check passes.
PACKING_MODES = ("auto", "true", "false")


@dataclass
class PackedRows:
    """A micro-batch laid out in rows: `embeds` (R, W, D), `positions` (R, W) restarting at
    0 for each sequence (a row's unused tail is a sequence of its own), and the target
    tokens' (row, position of the logits predicting them, token id)."""

    embeds: torch.Tensor
    positions: torch.Tensor
    target_rows: torch.Tensor
    target_cols: torch.Tensor
    target_ids: torch.Tensor
    rows: list[list[int]]

    @property
    def num_positions(self) -> int:
        return int(self.positions.numel())


def plan_rows(lengths: Sequence[int], cap: int) -> list[list[int]]:
    """Sample indices per row, each row at most max(`cap`, longest) positions long.

    Rows are padded to the longest row, so they are balanced: the fewest rows the cap
    allows, filled first-fit in decreasing length order (ties by index) up to the
    narrowest width that still fits them in that many rows (or up to the cap when first
    fit needs more rows). Deterministic.
    """
    if not lengths:
        return []
    longest = max(lengths)
    cap = max(int(cap), longest)
    need = -(-sum(lengths) // cap)
    width = max(longest, -(-sum(lengths) // need))
    while True:
        rows = _first_fit(lengths, width)
        if len(rows) <= need or width >= cap:
            return rows
        width = min(cap, width + max(1, width // 64))


def _first_fit(lengths: Sequence[int], width: int) -> list[list[int]]:
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(width - lengths[i])
    return rows


def pack_sequences(prefix: torch.Tensor, token_embeds: list[torch.Tensor],
                   prompts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]],
                   cap: int = ROW_TOKENS) -> PackedRows:
    """Lay out [prefix_i ; embeds of prompt_i + target_i] for every sample i in packed rows.

    `token_embeds[i]` holds the embeddings of prompt_i + target_i (in the LLM's dtype).
    Logits at position j predict the token at j + 1, so a target token at column c is
    predicted by column c - 1 of the same sequence.
    """
    p = prefix.shape[1]
    lengths = [p + len(a) + len(t) for a, t in zip(prompts, targets)]
    rows = plan_rows(lengths, cap)
    width = max(sum(lengths[i] for i in row) for row in rows)
    device, dtype = prefix.device, token_embeds[0].dtype
    row_embeds, row_pos, t_rows, t_cols, t_ids = [], [], [], [], []
    for r, row in enumerate(rows):
        pieces, pos, offset = [], [], 0
        for i in row:
            pieces += [prefix[i].to(dtype), token_embeds[i]]
            pos.append(torch.arange(lengths[i], device=device))
            first = offset + p + len(prompts[i])
            t_rows += [r] * len(targets[i])
            t_cols += range(first - 1, first - 1 + len(targets[i]))
            t_ids += list(targets[i])
            offset += lengths[i]
        if offset < width:
            pieces.append(prefix.new_zeros((width - offset, prefix.shape[2]), dtype=dtype))
            pos.append(torch.arange(width - offset, device=device))
        row_embeds.append(torch.cat(pieces, dim=0))
        row_pos.append(torch.cat(pos))
    as_long = dict(dtype=torch.long, device=device)
    return PackedRows(torch.stack(row_embeds), torch.stack(row_pos),
                      torch.as_tensor(t_rows, **as_long), torch.as_tensor(t_cols, **as_long),
                      torch.as_tensor(t_ids, **as_long), rows)


# -- the per-family self-check ------------------------------------------------------------
_VERDICTS: dict[tuple, tuple[bool, str]] = {}
_TINY_SIZES = dict(hidden_size=16, intermediate_size=32, ffn_dim=32, word_embed_proj_dim=16,
                   num_hidden_layers=2, num_attention_heads=2, head_dim=8, vocab_size=64,
                   max_window_layers=1)


def _tiny_config(config):
    """`config` with tiny sizes: the family's code paths (mask functions, rotary variant,
    window layout, kernel), small weights. A window shrinks to 3 positions so that the
    check also covers windowed attention across a sequence boundary."""
    tiny = copy.deepcopy(config)
    for key, value in _TINY_SIZES.items():
        if hasattr(tiny, key) and getattr(tiny, key) is not None:
            setattr(tiny, key, value)
    if getattr(tiny, "num_key_value_heads", None) is not None:
        tiny.num_key_value_heads = 1   # grouped-query attention where the family has it
    if getattr(tiny, "sliding_window", None):
        tiny.sliding_window = 3
    layer_types = getattr(tiny, "layer_types", None)
    if layer_types:
        kinds = list(dict.fromkeys(layer_types))
        tiny.layer_types = (kinds * 2)[:2]
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if hasattr(tiny, key):
            setattr(tiny, key, None if key == "pad_token_id" else 1)
    return tiny


def _check(llm: nn.Module) -> tuple[bool, str]:
    """Packed against separate logits of three short sequences on a tiny random copy, on
    the LLM's device and kernel (fp32; bf16 for flash kernels, which take no fp32)."""
    config = llm.config.get_text_config()
    kernel = llm.config._attn_implementation or "eager"
    device = next((p.device for p in llm.parameters() if p.device.type != "meta"),
                  torch.device("cpu"))
    dtype = torch.bfloat16 if "flash" in kernel else torch.float32
    try:
        tiny_cfg = _tiny_config(config)
        tiny_cfg._attn_implementation = kernel
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            tiny = type(llm)(tiny_cfg).to(device=device, dtype=dtype).eval()
            lengths = (5, 3, 4)
            seqs = [torch.randn(n, tiny_cfg.hidden_size).to(device=device, dtype=dtype)
                    for n in lengths]
        if tiny_cfg.hidden_size != _TINY_SIZES["hidden_size"]:
            return False, "its config could not be shrunk for the check"
        positions = torch.cat([torch.arange(n) for n in lengths])[None].to(device)
        with torch.no_grad():
            alone = torch.cat([tiny(inputs_embeds=s[None], use_cache=False).logits[0]
                               for s in seqs]).float()
            packed = tiny(inputs_embeds=torch.cat(seqs)[None], attention_mask=None,
                          position_ids=positions, use_cache=False).logits[0].float()
    except Exception as exc:  # a family the check cannot build or run does not pack
        return False, f"the check could not run ({type(exc).__name__}: {exc})"
    diff = (packed - alone).abs().max().item()
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2 * alone.abs().max().item()
    if diff > tolerance:
        return False, (f"packed logits differ from separate ones by {diff:.2g} (its mask "
                       f"does not follow restarting position ids)")
    return True, f"packed equals separate (max diff {diff:.1g})"


def packs_exactly(llm: nn.Module) -> tuple[bool, str]:
    """(whether `llm`'s family computes packed rows exactly, why), decided once per
    config class, attention kernel and device type, and logged; encoder-decoder LLMs
    never pack."""
    config = llm.config
    if config.is_encoder_decoder:
        return False, "encoder-decoder LLMs stay padded"
    device = next((p.device.type for p in llm.parameters()), "cpu")
    key = (type(llm), type(config.get_text_config()), config._attn_implementation, device)
    if key not in _VERDICTS:
        ok, why = _check(llm)
        _VERDICTS[key] = ok, why
        logger.log(logging.INFO if ok else logging.WARNING,
                   "LLM %s (%s attention): packed training %s: %s",
                   config.get_text_config().model_type, config._attn_implementation,
                   "on" if ok else "off, micro-batches stay padded", why)
    return _VERDICTS[key]

"""Write an InstructBLIP model as LAVIS files, and read them back (docs/checkpoints.md).

`write_lavis_files(model, out_dir)` writes what LAVIS's InstructBLIP loads:

    out_dir/instruct_blip_trimmed.pth   {"model": trainable weights under LAVIS names}
    out_dir/eva_vit_g.pth               the ViT weights, without the visual_encoder. prefix
    out_dir/llm/                        the LLM and its tokenizer (transformers layout)
    out_dir/qformer_tokenizer/          the Q-Former's BERT tokenizer

and returns the model settings of lavis_ib's LAVIS route that load them again. The names
come from `lavis_ib.models.weights.param_names.to_lavis`, the map the loader inverts.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from lavis_ib.models.weights.param_names import to_lavis

TRAINABLE = ("query_tokens", "qformer", "ln_vision", "llm_proj")


def write_lavis_files(model: Any, out_dir: str) -> dict[str, str]:
    """Write `model` (an InstructBLIP from lavis_ib) in LAVIS's file layout.

    Returns:
        {"checkpoint", "vit_weights", "llm_model", "qformer_tokenizer"}: paths to pass to
        `load_model(...)` or to put under `model:` in a project.
    """
    os.makedirs(out_dir, exist_ok=True)
    t5 = bool(model.llm.config.is_encoder_decoder)   # FlanT5 names its projection t5_proj
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    trimmed = {to_lavis(k, t5): v for k, v in state.items() if k.split(".")[0] in TRAINABLE}
    vit = {k[len("visual_encoder."):]: v for k, v in state.items()
           if k.startswith("visual_encoder.")}
    paths = {"checkpoint": os.path.join(out_dir, "instruct_blip_trimmed.pth"),
             "vit_weights": os.path.join(out_dir, "eva_vit_g.pth"),
             "llm_model": os.path.join(out_dir, "llm"),
             "qformer_tokenizer": os.path.join(out_dir, "qformer_tokenizer")}
    torch.save({"model": trimmed}, paths["checkpoint"])
    torch.save(vit, paths["vit_weights"])
    model.llm.save_pretrained(paths["llm_model"])
    model.llm_tokenizer.save_pretrained(paths["llm_model"])
    model.qformer_tokenizer.save_pretrained(paths["qformer_tokenizer"])
    return paths

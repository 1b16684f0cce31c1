"""LAVIS format: trimmed InstructBLIP .pth files, `eva_vit_g.pth`, and the LLM directory.

The files the authors released load as they are, with the tokenizer setup the released
checkpoints were trained with, so LAVIS users need no conversion (`build_lavis`)."""
from __future__ import annotations

import logging

import torch

from lavis_ib.common.errors import LavisIbError
from lavis_ib.common.precision import DTYPES
from lavis_ib.models.weights.blip2 import load_vit_file
from lavis_ib.models.weights.files import read_pth
from lavis_ib.models.weights.hf import lavis_llm_directory
from lavis_ib.models.weights.load_report import LoadReport, load_into
from lavis_ib.models.components.qformer import QFormerSpec
from lavis_ib.models.weights.tokenizers import check_vocab, qformer_tokenizer_from
from lavis_ib.models.components.vision import VisionSpec
from lavis_ib.models.weights.param_names import to_lavis

logger = logging.getLogger(__name__)


def lavis_state_to_ours(state: dict, our_keys: list[str], t5: bool) -> tuple[dict, list[str]]:
    """(our state dict, unused LAVIS keys)."""
    inverse = {}
    for key in our_keys:
        try:
            inverse[to_lavis(key, t5)] = key
        except KeyError:
            continue
    out = {inverse[k]: v for k, v in state.items() if k in inverse}
    return out, [k for k in state if k not in inverse]


def load_vit_weights(model, path: str) -> LoadReport:
    """Load `eva_vit_g.pth` into `model.visual_encoder`, dropping blocks past its depth
    (`weights.blip2.load_vit_file`; the position embedding is taken as the file holds it)."""
    report = load_vit_file(model, path, resample=False)
    depth = len(model.visual_encoder.blocks)
    if report.dropped:
        logger.info("vit_weights: dropped %d tensors of blocks >= %d (InstructBLIP uses %d blocks)",
                    len(report.dropped), depth, depth)
    return report


def _llm_and_tokenizer(cfg: dict, dtype: torch.dtype):
    """The LAVIS route's LLM directory; a Vicuna tokenizer without pad gets the authors'
    special tokens (`vicuna_special_tokens`)."""
    llm, tokenizer = lavis_llm_directory(cfg, dtype, "Vicuna or FlanT5")
    if not llm.config.is_encoder_decoder and tokenizer.pad_token is None:
        vicuna_special_tokens(tokenizer)
        if len(tokenizer) > llm.get_input_embeddings().weight.shape[0]:
            llm.resize_token_embeddings(len(tokenizer))
    return llm, tokenizer


def vicuna_special_tokens(tokenizer) -> None:
    """The authors' Vicuna setup: a `[PAD]` token, and `</s>` as bos, eos and unk, so every
    prompt of the released checkpoints started with the id of `</s>`.

    Setting `bos_token` alone does not change what a tokenizer with a `tokenizer.json`
    prepends (its post-processor keeps `<s>`), so the post-processor is rebuilt and the
    result checked: a tokenizer that still starts prompts otherwise is an error, not a
    silent difference from the checkpoints' training.
    """
    tokenizer.add_special_tokens({"pad_token": "[PAD]", "bos_token": "</s>",
                                  "eos_token": "</s>", "unk_token": "</s>"})
    tokenizer.add_bos_token = True
    rebuild = getattr(tokenizer, "update_post_processor", None)
    if callable(rebuild):
        rebuild()
    first = tokenizer("a", add_special_tokens=True).input_ids[:1]
    if first != [tokenizer.bos_token_id]:
        raise LavisIbError(f"the Vicuna tokenizer ({type(tokenizer).__name__}) still starts "
                           f"prompts with id {first} instead of </s> "
                           f"({tokenizer.bos_token_id}) after the authors' special-token "
                           f"setup; pass llm_tokenizer= a tokenizer that can prepend </s>.")


def build_lavis(cls, cfg: dict, settings: dict):
    """Route 1 of `build`: a model from LAVIS files.

    * `checkpoint=`: `{"model": state_dict}` with `query_tokens`, `Qformer.bert.*`,
      `ln_vision.*` and `llm_proj.*` (Vicuna) or `t5_proj.*` (FlanT5); full LAVIS
      checkpoints may also hold `visual_encoder.*`.
    * `vit_weights=`: `eva_vit_g.pth`: the ViT keys without the `visual_encoder.` prefix and
      40 blocks; blocks past the model's depth (the 40th) are dropped and reported as such.
    * `llm_model=`: a Vicuna/LLaMA or FlanT5 directory (weights + tokenizer). As LAVIS did,
      a LLaMA tokenizer without a pad token gets `[PAD]` and `</s>` as bos/eos/unk (the
      released checkpoints were trained that way), and T5's feed-forward activation is
      exact `gelu`.

    Files are read with `torch.load(weights_only=True)` only; every unused key is reported.
    """
    llm, tokenizer = _llm_and_tokenizer(cfg, DTYPES[settings.get("llm_precision", "fp32")])
    model = cls(VisionSpec.from_mapping(cfg["vision"]), QFormerSpec.from_mapping(cfg["qformer"]),
                llm, tokenizer, qformer_tokenizer_from(cfg.get("qformer_tokenizer") or "bert-base-uncased"),
                num_query_token=int(cfg["num_query_token"]),
                ln_vision_eps=float(cfg.get("ln_vision_eps") or 1e-5), **settings)
    check_vocab(model)
    reports = {}
    if cfg.get("vit_weights"):
        reports["vit_weights"] = load_vit_weights(model, cfg["vit_weights"])
    else:
        logger.warning("LAVIS route without vit_weights: the ViT keeps random weights unless "
                       "checkpoint holds visual_encoder.*")
    if cfg.get("checkpoint"):
        t5 = bool(llm.config.is_encoder_decoder)
        state = read_pth(cfg["checkpoint"], "checkpoint")
        ours, unused = lavis_state_to_ours(state, list(model.state_dict()), t5)
        trainable = [k for k in model.state_dict() if k.split(".")[0] in
                     ("query_tokens", "qformer", "ln_vision", "llm_proj")]
        report = load_into(model, ours, f"checkpoint={cfg['checkpoint']}", expected=trainable)
        report.unexpected += unused
        if report.missing:
            raise LavisIbError(
                f"checkpoint='{cfg['checkpoint']}' lacks {len(report.missing)} InstructBLIP "
                f"weights, e.g. {', '.join(to_lavis(k, t5) for k in report.missing[:5])}; use "
                f"init_from for BLIP-2 checkpoints.")
        if report.unexpected:
            logger.warning("checkpoint: %d unused keys, e.g. %s", len(report.unexpected),
                           report.unexpected[:5])
        reports["checkpoint"] = report
    model.load_report = reports
    model.configure_trainable()
    return model

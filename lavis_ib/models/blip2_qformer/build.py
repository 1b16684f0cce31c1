"""Building BLIP-2's stage-1 model from its `model:` node.

Stage 1 has no LLM and a LAVIS key of its own (`bert_weights`), so it chooses among three
routes of its own rather than `build_by_route`'s (LAVIS files, transformers' retrieval
layout, random; `build_from_config`), each under a fixed seed so all processes agree."""
from __future__ import annotations

import logging
from typing import Any

import torch

from lavis_ib.common.errors import ConfigError, LavisIbError
from lavis_ib.models.blip2_qformer.hf_format import load_pretrained
from lavis_ib.models.config import Blip2Stage1Config
from lavis_ib.models.components.qformer import QFormerSpec
from lavis_ib.models.components.vision import VisionSpec
from lavis_ib.models.weights.bert import bert_to_ours
from lavis_ib.models.weights.blip2 import fit_pos_embed, load_vit_file, read_source, to_ours
from lavis_ib.models.weights.load_report import load_into
from lavis_ib.models.weights.tokenizers import caption_tokenizer_from

logger = logging.getLogger(__name__)

#: LAVIS checkpoint keys with no parameter of ours: a buffer and BERT's decoder, which
#: is the word-embedding table (tied) and its bias (the same tensor as `cls.predictions.bias`)
LAVIS_UNUSED = ("Qformer.bert.embeddings.position_ids", "Qformer.cls.predictions.decoder.weight",
                "Qformer.cls.predictions.decoder.bias")
#: the parts of ours no HF directory and no BERT holds whole
PARTIAL_ROWS = ("qformer.word_embeddings.weight", "lm_head.bias")


def build_from_config(cls, cfg: Any):
    """BLIP-2's stage-1 model built from its `model:` node (the keys are
    `Blip2Stage1Config`'s).

    Where the weights come from (the first that applies); every route builds under a fixed
    seed (`random_init_seed`, 0 by default), so all processes start from the same tensors:

    1. LAVIS route, when `checkpoint` or `vit_weights` is set, or `bert_weights` without
       `pretrained`: the ViT from `vit_weights` (`eva_vit_g.pth`: blocks past the model's
       depth dropped, the position embedding resampled to the image size), the Q-Former's
       text side and the ITG head from `bert_weights` (a BERT-base directory, hub id or file:
       LAVIS's starting point; the query feed-forward is then copied from the text one), and
       everything LAVIS saved from `checkpoint` (`blip2_pretrained.pth`, `blip2_finetune_coco.pth`,
       which also holds its trained ViT);
    2. `pretrained`: transformers' `Blip2ForImageTextRetrieval` directory or hub id
       (`blip2_qformer.hf_format`);
    3. random, from `vision` / `qformer` / `num_query_token` / `embed_dim` (the tiny type).
    """
    cfg, settings = Blip2Stage1Config.checked(cfg, builder=cls)
    for key in ("llm_quantization", "llm_lora"):
        if cfg.get(key) not in (None, "none"):
            raise ConfigError(f"model.{key}: the BLIP-2 stage-1 model has no LLM; remove it.")
    pretrained = cfg.get("pretrained")
    lavis = bool(cfg.get("checkpoint") or cfg.get("vit_weights")
                 or (cfg.get("bert_weights") and not pretrained))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg.get("random_init_seed") or 0))
        if lavis:
            if pretrained:
                logger.info("LAVIS route chosen; pretrained=%s is not used.", pretrained)
            model = build_lavis(cls, cfg, settings)
        elif pretrained:
            bert = cfg.get("bert_weights")
            model = load_pretrained(cls, pretrained, settings,
                                    bert_init=(lambda m: load_bert(m, bert)) if bert else None)
        else:
            model = _new_model(cls, cfg, settings, caption_tokenizer_from(_need(cfg, "tokenizer")))
    model.set_gradient_checkpointing(vit=bool(cfg.get("vit_grad_ckpt")),
                                      qformer=bool(cfg.get("qformer_grad_ckpt")))
    return model


def _need(cfg: dict, key: str) -> Any:
    if not cfg.get(key):
        raise ConfigError(f"model.{key} is required to build BLIP-2 stage 1 without pretrained=.")
    return cfg[key]


def _new_model(cls, cfg: dict, settings: dict, tokenizer):
    return cls(VisionSpec.from_mapping(_need(cfg, "vision")),
               QFormerSpec.from_mapping(_need(cfg, "qformer")), tokenizer,
               num_query_token=int(_need(cfg, "num_query_token")),
               embed_dim=int(cfg.get("embed_dim") or 256),
               ln_vision_eps=float(cfg.get("ln_vision_eps") or 1e-5), **settings)


def build_lavis(cls, cfg: dict, settings: dict):
    """Route 1 (see `build_from_config`)."""
    model = _new_model(cls, cfg, settings, caption_tokenizer_from(_need(cfg, "tokenizer")))
    reports = {}
    if cfg.get("vit_weights"):
        reports["vit_weights"] = load_vit_file(model, cfg["vit_weights"])
    if cfg.get("bert_weights"):
        reports["bert_weights"] = load_bert(model, cfg["bert_weights"])
    if cfg.get("checkpoint"):
        reports["checkpoint"] = load_lavis_checkpoint(model, cfg["checkpoint"],
                                                      vit_loaded=bool(cfg.get("vit_weights")))
    if not cfg.get("checkpoint") and not cfg.get("vit_weights"):
        logger.warning("blip2: no vit_weights and no checkpoint: the ViT keeps random weights.")
    model.load_report = reports
    model.configure_trainable()
    return model


def _fill_rows(model, state: dict) -> list[str]:
    """Copy tables with fewer rows than ours (BERT's vocabulary has no `[DEC]`) into their
    leading rows; the new rows keep their initialisation. Returns the names filled so."""
    own = model.state_dict()
    done = []
    for name in PARTIAL_ROWS:
        value = state.get(name)
        if value is not None and value.shape[0] < own[name].shape[0] \
                and value.shape[1:] == own[name].shape[1:]:
            with torch.no_grad():
                model.get_parameter(name)[: value.shape[0]].copy_(value)
            done.append(name)
            del state[name]
    return done


def load_bert(model, path: str):
    """A BERT checkpoint into the text side and the ITG head, then the query feed-forward
    copied from the text feed-forward (LAVIS's order)."""
    kind, raw = read_source(path, "bert_weights")
    if kind != "bert":
        raise LavisIbError(f"bert_weights='{path}' is a {kind} checkpoint, not BERT.")
    state, unused = bert_to_ours(raw, list(model.state_dict()))
    partial = _fill_rows(model, state)
    expected = [k for k in model.state_dict()
                if k.startswith(("qformer.", "lm_head.")) and k not in partial
                and ".cross_attn." not in k and ".ffn_query." not in k]
    report = load_into(model, state, f"bert_weights={path}", expected=expected)
    report.loaded += partial
    if report.missing:
        raise LavisIbError(f"bert_weights='{path}' lacks {len(report.missing)} BERT weights, "
                           f"e.g. {report.missing[:5]}; is it a BERT masked-LM checkpoint?")
    model.copy_query_ffn()
    logger.info("bert_weights=%s: text side and ITG head from BERT (%s from its shorter "
                "vocabulary), query feed-forward copied from the text feed-forward, "
                "cross-attention random; %d BERT tensors unused", path, partial, len(unused))
    return report


def load_lavis_checkpoint(model, path: str, vit_loaded: bool):
    """A LAVIS stage-1 `.pth`: query tokens, Q-Former, `ln_vision`, the heads, `temp`,
    and the ViT when the file holds one (the COCO-finetuned model)."""
    kind, raw = read_source(path, "checkpoint")
    if kind != "lavis":
        raise LavisIbError(f"checkpoint='{path}' is a {kind} checkpoint, not a LAVIS BLIP-2 "
                           f".pth; pass a Hugging Face directory as pretrained=.")
    state, unused = to_ours("lavis", raw, list(model.state_dict()))
    if "temp" in state:   # LAVIS's 0-dim temperature; ours has one element (FSDP2)
        state["temp"] = state["temp"].reshape(model.temp.shape)
    resampled = fit_pos_embed(state, model.state_dict(), f"checkpoint={path}")
    has_vit = any(k.startswith("visual_encoder.") for k in state)
    expected = [k for k in model.state_dict() if not k.startswith("visual_encoder.")
                or has_vit or not vit_loaded]
    report = load_into(model, state, f"checkpoint={path}", expected=expected)
    report.resampled = resampled  # type: ignore[attr-defined]
    vit_missing = [k for k in report.missing if k.startswith("visual_encoder.")]
    if len(vit_missing) < len(report.missing):
        raise LavisIbError(f"checkpoint='{path}' lacks {len(report.missing) - len(vit_missing)} "
                           f"stage-1 weights, e.g. {report.missing[:5]}; is it a BLIP-2 "
                           f"stage-1 .pth (blip2_pretrained.pth)?")
    if vit_missing:
        logger.warning("LAVIS route without vit_weights: the ViT keeps random weights "
                       "(checkpoint=%s holds no visual_encoder.*)", path)
    decoder = raw.get("Qformer.cls.predictions.decoder.weight")
    if decoder is not None and not torch.equal(decoder.to(model.qformer.word_embeddings.weight),
                                               model.qformer.word_embeddings.weight.detach()):
        logger.warning("checkpoint=%s: its ITG output matrix differs from its word "
                       "embeddings; lavis_ib ties them (LAVIS's BERT does) and uses the "
                       "word embeddings", path)
    report.unexpected += [k for k in unused if k not in LAVIS_UNUSED]
    if report.unexpected:
        logger.warning("checkpoint: %d unused keys, e.g. %s", len(report.unexpected),
                       report.unexpected[:5])
    return report

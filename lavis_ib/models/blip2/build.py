"""Building a BLIP-2 model from a model config node.

The three weight routes every Q-Former model shares (LAVIS files, a Hugging Face directory,
random), filled in for BLIP-2, and stage 1's text side carried when a source holds it; the
rules are on `build_from_config`."""
from __future__ import annotations

import logging
from typing import Any

from lavis_ib.common.errors import ConfigError, LavisIbError
from lavis_ib.common.precision import DTYPES
from lavis_ib.models.blip2.hf_format import load_pretrained
from lavis_ib.models.blip2.init import holds, init_from
from lavis_ib.models.blip2.text_side import PROBE_HEAD, PROBE_TEXT, is_carried
from lavis_ib.models.weights.blip2 import (PROJECTIONS, fit_pos_embed, load_vit_file,
                                           read_source, to_ours)
from lavis_ib.models.weights.load_report import load_into
from lavis_ib.models.components.qformer import QFormerSpec
from lavis_ib.models.components.qformer_llm import TRAINABLE_PARTS
from lavis_ib.models.weights.tokenizers import load_tokenizer
from lavis_ib.models.components.vision import VisionSpec
from lavis_ib.models.weights.hf import build_random_llm, lavis_llm_directory
from lavis_ib.models.components.build_routes import build_by_route
from lavis_ib.models.config import Blip2Config

logger = logging.getLogger(__name__)

#: `ln_vision` eps of the random and LAVIS routes when the node sets none (LAVIS's LayerNorm default)
LN_VISION_EPS = 1e-5


class SourceReader:
    """Reads each weight file of one build once (a source is probed for the text side
    before the model exists, then loaded); errors name the config key (`labels`)."""

    def __init__(self, labels: dict[str, str] | None = None) -> None:
        self._seen: dict[str, tuple[str, dict]] = {}
        self.labels = dict(labels or {})

    def __call__(self, path: str) -> tuple[str, dict]:
        if path not in self._seen:
            self._seen[path] = read_source(path, self.labels.get(path, "init_from"))
        return self._seen[path]


def build_from_config(cls, cfg: Any):
    """A BLIP-2 model built from its `model:` node (the keys are `Blip2Config`'s).

    Where the weights come from (the first that applies):

    1. LAVIS route, when any of `checkpoint`, `vit_weights`, `llm_model` is set: the LLM and
       its tokenizer from `llm_model` (an OPT, FlanT5 or other causal-LM directory), the ViT
       from `vit_weights` (`eva_vit_g.pth`) and/or `checkpoint` (a caption checkpoint holds
       its fine-tuned ViT), the rest from `checkpoint` (`blip2_pretrained_opt2.7b.pth`,
       `blip2_pretrained_vicuna7b.pth`, ...); the architecture from
       `vision`/`qformer`/`num_query_token`. A stage-1 `checkpoint` (`blip2_pretrained.pth`,
       no projection) starts stage 2 as LAVIS's `pretrain_stage2.yaml` does: read as
       `init_from` (`blip2.init`), the projection random;
    2. `pretrained`: a `Blip2ForConditionalGeneration` + `Blip2Processor` directory or hub id;
    3. random, from `vision`/`qformer`/`llm_config` and `llm_tokenizer` (the tiny types).

    Then the `init_from` sources (training initialisation, `blip2.init`) are applied in order,
    after the model's own `checkpoint` or `pretrained` weights, which fill first.
    When a source among `checkpoint` and `init_from` (or a `pretrained` export) holds the
    Q-Former's stage-1 text side or ITG head, the model gets them, frozen, to carry them
    (`text_side`); a stage-1 `checkpoint` is the first `init_from` source.
    """
    cfg, settings = Blip2Config.checked(cfg, builder=cls)
    objective = settings.get("stage2_objective")
    if objective not in cls.STAGE2_OBJECTIVES:
        raise ConfigError(f"model.stage2_objective: '{objective}' is not one of "
                          f"{[o for o in cls.STAGE2_OBJECTIVES if o]} for {cfg.get('arch')} "
                          f"(prefix_lm is the encoder-decoder objective: blip2_t5).")
    checkpoint = cfg.get("checkpoint")
    reader = SourceReader({checkpoint: "checkpoint"} if checkpoint else None)
    sources = list(cfg.get("init_from") or [])
    model = build_by_route(cls, cfg, settings,
                           lavis=lambda c, f, s: build_lavis(c, f, s, reader),
                           pretrained=load_pretrained, random=build_random)
    stage1 = bool(checkpoint) and is_stage1(*reader(checkpoint))
    # the model's own weights come first: init_from fills what they lack (the text side)
    lavis_route = any(cfg.get(k) for k in ("checkpoint", "vit_weights", "llm_model"))
    first = [checkpoint] if checkpoint else (
        [cfg["pretrained"]] if cfg.get("pretrained") and not lavis_route else [])
    if sources or stage1:
        spec = model.qformer_spec
        model.add_carried_parts(
            holds(reader, first + sources, PROBE_TEXT, (spec.vocab_size, spec.hidden_size)),
            holds(reader, first + sources, PROBE_HEAD, (spec.hidden_size, spec.hidden_size)))
        init_from(model, first + sources, allow_random_init=bool(cfg.get("allow_random_init")),
                  reader=reader)
    return model


def _spec_args(cfg: dict) -> tuple[VisionSpec, QFormerSpec, int]:
    for key in ("num_query_token", "vision", "qformer"):
        if not cfg.get(key):
            raise ConfigError(f"model.{key} is required to build BLIP-2 without pretrained=.")
    return (VisionSpec.from_mapping(cfg["vision"]), QFormerSpec.from_mapping(cfg["qformer"]),
            int(cfg["num_query_token"]))


def build_random(cls, cfg: dict, settings: dict):
    """Route 3: random weights from the architecture keys (tiny model types)."""
    if not cfg.get("llm_config") or not cfg.get("llm_tokenizer"):
        raise ConfigError(
            f"model type '{cfg.get('model_type')}' has no weights to load: set pretrained=<HF "
            f"Blip2ForConditionalGeneration dir or hub id>, or the LAVIS route (checkpoint=, "
            f"vit_weights=, llm_model=), or llm_config + llm_tokenizer for a random model.")
    vision, qformer, queries = _spec_args(cfg)
    model = cls(vision, qformer, build_random_llm(cfg["llm_config"]),
                load_tokenizer(cfg["llm_tokenizer"], "llm_tokenizer"), num_query_token=queries,
                ln_vision_eps=float(cfg.get("ln_vision_eps") or LN_VISION_EPS), **settings)
    model.check_llm_vocab()
    return model


#: tensors only a BLIP-2 stage-1 file holds (its ITC/ITM/ITG heads)
STAGE1_MARKERS = ("temp", "itm_head.weight", "vision_proj.weight", "Qformer.cls.predictions.bias")


def is_stage1(kind: str, raw: dict) -> bool:
    """A LAVIS file with stage 1's heads and no projection to any LLM: BLIP-2 stage 1
    (`blip2_pretrained.pth`), which starts stage 2 instead of being its weights."""
    return (kind == "lavis" and any(k in raw for k in STAGE1_MARKERS)
            and not any(k.split(".")[0] in PROJECTIONS for k in raw))


def load_lavis_checkpoint(model, path: str, vit_loaded: bool, reader=None):
    """A LAVIS BLIP-2 `.pth` through the shared BLIP-2 reader: query tokens, Q-Former,
    `ln_vision`, projection, and the ViT when the file holds one (caption models)."""
    kind, raw = (reader or SourceReader({path: "checkpoint"}))(path)
    if kind != "lavis":
        raise LavisIbError(f"checkpoint='{path}' is a {kind} checkpoint, not a LAVIS BLIP-2 "
                           f".pth; pass a Hugging Face directory as pretrained=.")
    state, unused = to_ours("lavis", raw, list(model.state_dict()))
    resampled = fit_pos_embed(state, model.state_dict(), f"checkpoint={path}")
    has_vit = any(k.startswith("visual_encoder.") for k in state)
    expected = [k for k in model.state_dict()
                if (k.split(".")[0] in TRAINABLE_PARTS and not is_carried(k))
                or (k.startswith("visual_encoder.") and (has_vit or not vit_loaded))]
    report = load_into(model, state, f"checkpoint={path}", expected=expected)
    report.unexpected += unused
    report.resampled = resampled  # type: ignore[attr-defined]
    vit_missing = [k for k in report.missing if k.startswith("visual_encoder.")]
    if len(vit_missing) < len(report.missing):
        raise LavisIbError(f"checkpoint='{path}' lacks {len(report.missing) - len(vit_missing)} "
                           f"BLIP-2 weights, e.g. {report.missing[:5]}; is it a BLIP-2 .pth?")
    if vit_missing:
        logger.warning("LAVIS route without vit_weights: the ViT keeps random weights "
                       "(checkpoint=%s holds no visual_encoder.*)", path)
    if report.unexpected:
        logger.warning("checkpoint: %d unused keys, e.g. %s", len(report.unexpected),
                       report.unexpected[:5])
    return report


def build_lavis(cls, cfg: dict, settings: dict, reader=None):
    """Route 1: a BLIP-2 model from LAVIS files (see `build_from_config`)."""
    llm, tokenizer = lavis_llm_directory(cfg, DTYPES[settings.get("llm_precision", "fp32")],
                                         "OPT, FlanT5 or causal-LM")
    vision, qformer, queries = _spec_args(cfg)
    model = cls(vision, qformer, llm, tokenizer, num_query_token=queries,
                ln_vision_eps=float(cfg.get("ln_vision_eps") or LN_VISION_EPS), **settings)
    model.check_llm_vocab()
    reports = {}
    if cfg.get("vit_weights"):
        reports["vit_weights"] = load_vit_file(model, cfg["vit_weights"])
    checkpoint = cfg.get("checkpoint")
    reader = reader or SourceReader({checkpoint: "checkpoint"})
    if checkpoint and is_stage1(*reader(checkpoint)):
        logger.info("checkpoint=%s is a BLIP-2 stage-1 file (no projection): stage 2 starts "
                    "from it as from init_from (the projection random)", checkpoint)
    elif checkpoint:
        reports["checkpoint"] = load_lavis_checkpoint(model, checkpoint,
                                                      vit_loaded=bool(cfg.get("vit_weights")),
                                                      reader=reader)
    elif not cfg.get("vit_weights"):
        logger.warning("LAVIS route with llm_model only: ViT, Q-Former and projection keep "
                       "random weights.")
    model.load_report = reports
    model.configure_trainable()
    return model

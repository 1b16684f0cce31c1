"""Building an InstructBLIP model from a model config node.

InstructBLIP's three weight routes (LAVIS files, a transformers directory, random for the
tiny types), handed to the shared route choice, then its `init_from` sources; the rules
are on `build_from_config`."""
from __future__ import annotations

import logging
from typing import Any

from lavis_ib.common.errors import ConfigError
from lavis_ib.models.weights.hf import build_random_llm
from lavis_ib.models.components.build_routes import build_by_route
from lavis_ib.models.config import InstructBlipConfig
from lavis_ib.models.components.qformer import QFormerSpec
from lavis_ib.models.weights.tokenizers import load_tokenizer, qformer_tokenizer_from
from lavis_ib.models.components.vision import VisionSpec
from lavis_ib.models.instructblip.hf_format import load_pretrained
from lavis_ib.models.instructblip.lavis_format import build_lavis

logger = logging.getLogger(__name__)
#: `ln_vision` eps of the random route when the node sets none
RANDOM_LN_VISION_EPS = 1e-6

def build_from_config(cls, cfg: Any):
    """An InstructBLIP model built from its `model:` node (the keys are
    `InstructBlipConfig`'s).

    Where the weights come from (the first that applies, `build_by_route`):

    1. LAVIS route, when any of `checkpoint`, `vit_weights`, `llm_model` is set: architecture
       from `vision`/`qformer`/`num_query_token`, the LLM and its tokenizer from `llm_model`,
       the ViT from `vit_weights` (eva_vit_g.pth), the rest from `checkpoint` (a trimmed
       InstructBLIP .pth); `qformer_tokenizer` names the BERT tokenizer.
    2. `pretrained`: a local directory written by transformers'
       `InstructBlipForConditionalGeneration.save_pretrained` (+ `InstructBlipProcessor`),
       or a hub id resolved through the local Hugging Face cache: architecture, weights,
       both tokenizers and the eval image settings all come from it.
    3. Random: the architecture from `vision`/`qformer`/`llm_config` with the tokenizers
       `llm_tokenizer`/`qformer_tokenizer` (the tiny model types; paths relative to the
       `lavis_ib` package are resolved there).

    Then `init_from` sources (training initialisation) are applied in order.
    """
    cfg, settings = InstructBlipConfig.checked(cfg, builder=cls)
    model = build_by_route(cls, cfg, settings, lavis=build_lavis, pretrained=load_pretrained,
                           random=build_random)
    if cfg.get("init_from"):
        model.init_from(list(cfg["init_from"]), allow_random_init=bool(cfg.get("allow_random_init")))
    return model


def build_random(cls, cfg: dict, settings: dict):
    """Route 3: random weights from the architecture keys (tiny model types)."""
    if not cfg.get("llm_config"):
        raise ConfigError(
            f"model type '{cfg.get('model_type')}' has no weights to load: set "
            f"pretrained=<HF InstructBLIP dir or hub id>, or the LAVIS route "
            f"(checkpoint=, vit_weights=, llm_model=), or llm_config for a random LLM.")
    for key in ("llm_tokenizer", "qformer_tokenizer", "num_query_token", "vision", "qformer"):
        if not cfg.get(key):
            raise ConfigError(f"model.{key} is required to build a random model.")
    llm = build_random_llm(cfg["llm_config"])
    return cls(VisionSpec.from_mapping(cfg["vision"]), QFormerSpec.from_mapping(cfg["qformer"]),
               llm, load_tokenizer(cfg["llm_tokenizer"], "llm_tokenizer"),
               qformer_tokenizer_from(cfg["qformer_tokenizer"]),
               num_query_token=int(cfg["num_query_token"]),
               ln_vision_eps=float(cfg.get("ln_vision_eps") or RANDOM_LN_VISION_EPS), **settings)

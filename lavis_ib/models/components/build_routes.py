"""How every Q-Former model is built from its `model:` node, once its config class
(models/config.py) has checked it.

Each model package supplies its three weight routes; the choice among them, the seeding and
the LLM options are the same for all of them, so they live here once (`build_by_route`)."""
from __future__ import annotations

import logging
from typing import Any, Callable

import torch

from lavis_ib.models.config import LAVIS_ROUTE, QFormerModelConfig
from lavis_ib.models.llm.options import apply_llm_options

logger = logging.getLogger(__name__)

Route = Callable[[type, dict, dict], Any]


def build_by_route(cls: type, cfg: dict, settings: dict, *, lavis: Route,
                   pretrained: Callable[[type, str, dict], Any], random: Route) -> Any:
    """The model from the first route that applies, with gradient checkpointing set.

    Routes, the first that applies: LAVIS files (`checkpoint` / `vit_weights` /
    `llm_model`), a Hugging Face directory or hub id (`pretrained`), or random
    initialisation from the architecture keys (the tiny types). The random route is seeded
    (`random_init_seed`, 0 by default) so that two processes building a tiny type get the
    same weights whatever the global RNG holds. The LLM memory options
    (`llm_quantization`, `llm_lora`) apply last, the same way whatever route built the model.
    """
    lavis_keys = [k for k in QFormerModelConfig.keys_with(LAVIS_ROUTE) if cfg.get(k)]
    if lavis_keys:
        if cfg.get("pretrained"):
            logger.info("LAVIS route (%s) chosen; pretrained=%s is not used.",
                        ", ".join(lavis_keys), cfg["pretrained"])
        model = lavis(cls, cfg, settings)
    elif cfg.get("pretrained"):
        model = pretrained(cls, cfg["pretrained"], settings)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(cfg.get("random_init_seed") or 0))
            model = random(cls, cfg, settings)
    model.set_gradient_checkpointing(vit=bool(cfg.get("vit_grad_ckpt")),
                                      qformer=bool(cfg.get("qformer_grad_ckpt")))
    # the frozen LLM in training: LAVIS's train mode (its dropout on) or eval mode
    model.set_llm_train_mode(cfg.get("llm_train_mode") or QFormerModelConfig().llm_train_mode)
    return apply_llm_options(model, cfg)

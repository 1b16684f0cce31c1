"""How every Q-Former model is built from its `model:` node: the node is checked once
(unknown keys, precision names) and the weights come from the first route that applies:
LAVIS files (`checkpoint` / `vit_weights` / `llm_model`), a Hugging Face directory or hub id
(`pretrained`), or random initialisation from the architecture keys (the tiny types).
Each model package supplies its three routes; the choice is the same for all of them.
The random route is seeded (`random_init_seed`, 0 by default) so that two processes building
a tiny type get the same weights whatever the global RNG holds. The LLM memory options
(`llm_quantization`, `llm_lora`) apply last, the same way whatever route built the model.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

import torch

from lavis_ib.common.containers import to_plain
from lavis_ib.common.errors import ConfigError, did_you_mean
from lavis_ib.common.precision import DTYPES
from lavis_ib.models.llm.options import apply_llm_options

logger = logging.getLogger(__name__)
LAVIS_KEYS = ("checkpoint", "vit_weights", "llm_model")
#: Keys every model node accepts beside its own (see `llm_options` and the random route).
COMMON_KEYS = ("llm_quantization", "llm_lora", "random_init_seed")

Route = Callable[[type, dict, dict], Any]


def checked_config(cfg: Any, known_keys: Iterable[str],
                   setting_names: Iterable[str]) -> tuple[dict, dict]:
    """(the node as a dict, the model settings it sets), or one ConfigError naming an
    unknown key (with the closest known one) or a precision that is not a dtype name."""
    cfg, known = dict(to_plain(cfg) or {}), {*known_keys, *COMMON_KEYS}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(f"model config: unknown keys {unknown}."
                          f"{did_you_mean(unknown[0], known)} Known: {sorted(known)}.")
    settings = {k: cfg[k] for k in setting_names if cfg.get(k) is not None}
    for key in ("vit_precision", "llm_precision"):
        if key in settings and settings[key] not in DTYPES:
            raise ConfigError(f"model.{key} must be one of {', '.join(DTYPES)}; "
                              f"got '{settings[key]}'.")
    return cfg, settings


def build_by_route(cls: type, cfg: dict, settings: dict, *, lavis: Route,
                   pretrained: Callable[[type, str, dict], Any], random: Route) -> Any:
    """The model from the first route that applies, with gradient checkpointing set."""
    lavis_keys = [k for k in LAVIS_KEYS if cfg.get(k)]
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
    return apply_llm_options(model, cfg)

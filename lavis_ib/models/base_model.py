"""`BaseModel`: the contract every registered model fulfils.

A model class owns its default YAML files, one per model type, and builds itself from a
model config node. The runner and strategies only rely on the methods below, so a
user's own model plugs into training, FSDP and evaluation by implementing them.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from lavis_ib.common.errors import ConfigError, did_you_mean
from lavis_ib.common.paths import package_path


class BaseModel(nn.Module):
    """Base of registered models.

    Subclasses set `PRETRAINED_MODEL_CONFIG_DICT = {model_type: yaml path}` (paths relative
    to the `lavis_ib` package or absolute) and implement:

    - ``from_config(cfg)``: build from a merged model config node.
    - ``forward(samples) -> {"loss": tensor}``: the training loss for a batch dict.
    - ``trainable_module_names()`` (optional): which submodules train; the default is every
      parameter with ``requires_grad``.
    - ``shard_units()`` (optional): the transformer blocks FSDP wraps one by one.
    - ``checkpoint_units()`` (optional): the blocks activation checkpointing may wrap.
    """

    PRETRAINED_MODEL_CONFIG_DICT: dict[str, str] = {}

    @classmethod
    def default_config_path(cls, model_type: str) -> str:
        """The default YAML of `model_type`.

        Raises:
            ConfigError: naming the known model types and the closest match.
        """
        known = cls.PRETRAINED_MODEL_CONFIG_DICT
        if model_type not in known:
            raise ConfigError(
                f"unknown model_type '{model_type}' for {cls.__name__}."
                f"{did_you_mean(model_type, known)} Known types: {', '.join(sorted(known))}.")
        return package_path(known[model_type])

    @classmethod
    def from_config(cls, cfg: Any) -> "BaseModel":
        raise NotImplementedError(f"{cls.__name__} must implement from_config(cfg)")

    @classmethod
    def from_pretrained(cls, model_type: str) -> "BaseModel":
        """Build `model_type` from its default YAML alone."""
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(cls.default_config_path(model_type)).model
        return cls.from_config(cfg)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def trainable_parameters(self) -> Iterable[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.named_parameters() if p.requires_grad)

    def shard_units(self) -> list[nn.Module]:
        """Submodules FSDP shards individually (transformer blocks); the root takes the rest."""
        return []

    def checkpoint_units(self) -> list[nn.Module]:
        """Submodules whose activations may be recomputed in the backward pass."""
        return []

    # TEMP stand-in for the models helper's contract methods (the lead drops this commit)
    def generate(self, samples: Any, **settings: Any) -> list:
        raise NotImplementedError(f"{type(self).__name__} must implement generate(samples)")

    def score_candidates(self, samples: Any, candidates: Any, append_eos: Any = None) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement score_candidates")

    def save_pretrained(self, directory: str) -> None:
        from lavis_ib.common.errors import LavisIbError

        raise LavisIbError(f"{type(self).__name__} has no export format")

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

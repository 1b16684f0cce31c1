"""`BaseModel`: the contract between a registered model and the rest of lavis_ib.

Tasks, runners and loaders call only the members declared here, never probe a model for
others, so a user's own model plugs into training, FSDP, evaluation and export by
subclassing `BaseModel` and overriding what it supports (docs/architecture.md)."""
from __future__ import annotations

import inspect
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from lavis_ib.common.errors import ConfigError, LavisIbError, did_you_mean
from lavis_ib.common.paths import package_path


class BaseModel(nn.Module):
    """Base of registered models.

    Every member has a documented default: either a neutral value (no shard units, family
    "generic") or an error that names the model and what it lacks (a model that cannot
    generate text).

    Subclasses set `PRETRAINED_MODEL_CONFIG_DICT = {model_type: yaml path}` (paths relative
    to the `lavis_ib` package or absolute), implement `from_config` and `forward`, and
    override the inference and export members they support.
    """

    PRETRAINED_MODEL_CONFIG_DICT: dict[str, str] = {}

    # -- building ----------------------------------------------------------------------
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
        """Build from a merged model config node. No default: every model implements it."""
        raise NotImplementedError(f"{cls.__name__} must implement from_config(cfg)")

    @classmethod
    def from_pretrained(cls, model_type: str) -> "BaseModel":
        """Build `model_type` from its default YAML alone."""
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(cls.default_config_path(model_type)).model
        return cls.from_config(cfg)

    def preprocess_config(self, default: Any) -> Any:
        """The `preprocess` node the loaders build processors from. Default: `default` (the
        model type's YAML); a model loaded from a checkpoint that carries its own image
        settings returns them instead."""
        return default

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- training ----------------------------------------------------------------------
    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The training loss of a batch: {"loss", "loss_sum", "num_tokens"}.

        `loss_sum` is the summed token loss and `num_tokens` the number of target tokens
        of this batch, `loss = loss_sum / num_tokens`. The runner back-propagates
        `loss_sum` normalised by the token count of the global batch, so that gradient
        accumulation and data parallelism weigh every token alike. No default.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement forward(samples) -> "
                                  f"{{'loss', 'loss_sum', 'num_tokens'}}")

    def trainable_module_names(self) -> list[str]:
        """Names of the top-level submodules that train (shown in logs and checkpoints).
        Default: every top-level submodule holding a parameter with `requires_grad`."""
        return [name for name, module in self.named_children()
                if any(p.requires_grad for p in module.parameters())]

    def trainable_parameters(self) -> Iterable[tuple[str, nn.Parameter]]:
        """(name, parameter) pairs the optimiser updates and checkpoints store. Default:
        every parameter with `requires_grad`."""
        return ((n, p) for n, p in self.named_parameters() if p.requires_grad)

    def shard_units(self) -> list[nn.Module]:
        """Submodules FSDP shards one by one (transformer blocks); the root takes the rest.
        Default: none (the whole model is one unit)."""
        return []

    def checkpoint_units(self) -> list[nn.Module]:
        """Submodules whose activations may be recomputed in the backward pass (activation
        checkpointing). Default: none."""
        return []

    # -- inference ---------------------------------------------------------------------
    def generate(self, samples: dict[str, Any]) -> list[str]:
        """Text for each sample of a batch. A subclass declares its generation settings
        as keyword parameters of its own `generate` (see `generation_settings`).
        Default: the model does not generate text (LavisIbError)."""
        raise LavisIbError(f"{type(self).__name__} does not generate text (no generate()).")

    @classmethod
    def generation_settings(cls) -> frozenset[str]:
        """The settings `generate` accepts: the keyword parameters of the class's own
        `generate` signature (after `samples`; a `**kwargs` catch-all is not a setting).
        A classmethod, so a task checks a project's settings before the model is built."""
        params = list(inspect.signature(cls.generate).parameters.values())
        params = params[2:] if params and params[0].name == "self" else params[1:]
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return frozenset(p.name for p in params if p.kind in kinds)

    def score_candidates(self, samples: dict[str, Any], candidates: Sequence,
                         append_eos: bool | None = None):
        """Log-probability of each candidate text given each sample.

        Args:
            candidates: one list for the whole batch, or one list per sample.
            append_eos: score an end-of-text token after each candidate; None: the model's
                `default_append_eos`.

        Returns:
            (scores (B, Cmax) float with -inf where padded, mask (B, Cmax) bool).

        Default: the model does not rank candidates (LavisIbError).
        """
        raise LavisIbError(f"{type(self).__name__} does not rank candidates "
                           f"(no score_candidates()).")

    @property
    def llm_family(self) -> str:
        """The name per-family evaluation settings are keyed by (e.g. `length_penalty:
        {vicuna: 0, flant5: -1}`). Default: "generic"."""
        return "generic"

    @property
    def default_append_eos(self) -> bool:
        """Whether `score_candidates` scores an end-of-text token after each candidate when
        neither the call nor the dataset's settings say. Default: False."""
        return False

    def inference_counts(self) -> dict[str, int]:
        """Running counts of inference events a user must see in the results, e.g.
        `num_truncated` (prompts cut to the model's prompt limit). The evaluation loop adds
        each count's increase over a split to that split's metrics. Default: none."""
        return {}

    # -- export ------------------------------------------------------------------------
    def merge_adapters(self) -> int:
        """Fold trained adapters (LoRA on the LLM) into the weights they adapt, so that
        `save_pretrained` writes plain weights; returns how many layers were merged.
        Default: the model has no adapters (0)."""
        return 0

    def save_pretrained(self, directory: str) -> str:
        """Write the model in its export format to `directory` and return the directory.
        Default: the model has no export format (LavisIbError)."""
        raise LavisIbError(f"{type(self).__name__} has no export format (no save_pretrained()).")

"""LoRA adapters on the frozen LLM (`model.llm_lora`), through peft: an option, off by
default (the paper trains only the Q-Former side), for runs that also adapt the LLM. The
settings are checked before anything is built, the adapters wrap the LLM in place and are
merged back for the export; the choices and their reasons are in docs/lora.md.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any, Mapping

import torch
from torch import nn

from lavis_ib.common.errors import ConfigError, LavisIbError, did_you_mean

logger = logging.getLogger(__name__)

KEYS = ("r", "alpha", "dropout", "target_modules")
#: target_modules when a node does not name them, by the LLM's transformers `model_type`
#: (the attention query and value projections, as in the LoRA paper)
DEFAULT_TARGETS = {"llama": ["q_proj", "v_proj"], "opt": ["q_proj", "v_proj"],
                   "mistral": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"],
                   "t5": ["q", "v"]}
#: the seed of the adapters' random A matrices (identical in every process; B starts at
#: 0, peft's default, so fresh adapters are the identity)
ADAPTER_SEED = 0
ADAPTER_NAME = "default"
#: llm_quantization modes LoRA is refused with (bitsandbytes: never run in this project; on
#: torchao's int8_weight_only the adapters wrap the int8 layers and train as usual)
UNTESTED_WITH_QUANTIZATION = ("int8", "nf4")


def is_adapter_parameter(name: str) -> bool:
    """Whether a parameter name belongs to a LoRA adapter (peft's `lora_A` / `lora_B`)."""
    return any(part in ("lora_A", "lora_B") for part in name.split("."))


def lora_problems(model: Mapping[str, Any], run: Mapping[str, Any] | None) -> list[str]:
    """Every problem of `model.llm_lora` that can be seen before anything is built."""
    settings = model.get("llm_lora")
    if settings is None or settings is False:
        return []
    if not isinstance(settings, Mapping):
        return [f"model.llm_lora must be a mapping such as {{r: 8, alpha: 16}} (or null "
                f"for no adapters); got {settings!r}."]
    if not settings:
        return ["model.llm_lora is an empty mapping: set at least r (e.g. {r: 8}), or null "
                "for no adapters."]
    out = [f"model.llm_lora: unknown key '{k}'.{did_you_mean(str(k), KEYS)} Known: "
           f"{', '.join(KEYS)}." for k in settings if k not in KEYS]
    out += _number_problems(settings)
    targets = settings.get("target_modules")
    if targets is not None and not _is_name_list(targets):
        out.append(f"model.llm_lora.target_modules must be a non-empty list of module names "
                   f"(e.g. [q_proj, v_proj]); got {targets!r}.")
    if model.get("llm_quantization") in UNTESTED_WITH_QUANTIZATION:
        out.append(f"model.llm_lora with model.llm_quantization="
                   f"'{model['llm_quantization']}' (bitsandbytes) has never run here, so it is "
                   f"refused; use llm_quantization: int8_weight_only, or none with "
                   f"llm_precision: bf16, or set llm_lora: null.")
    return out


def _number_problems(settings: Mapping[str, Any]) -> list[str]:
    out = []
    r = settings.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        out.append(f"model.llm_lora.r must be an integer >= 1 (the adapter rank); got {r!r}.")
    alpha = settings.get("alpha", None)
    if alpha is not None and (not _is_number(alpha) or alpha <= 0):
        out.append(f"model.llm_lora.alpha must be a number > 0; got {alpha!r}.")
    dropout = settings.get("dropout", None)
    if dropout is not None and (not _is_number(dropout) or not 0 <= dropout < 1):
        out.append(f"model.llm_lora.dropout must be in [0, 1); got {dropout!r}.")
    return out


def _is_name_list(value: Any) -> bool:
    return (isinstance(value, (list, tuple)) and bool(value)
            and all(isinstance(t, str) and t for t in value))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def resolved_settings(settings: Mapping[str, Any], llm: nn.Module) -> dict[str, Any]:
    """The node's settings with defaults filled (alpha = 2r, dropout 0, the family's
    targets) and the targets checked against the LLM's linear layers.

    Raises:
        ConfigError: a problem `lora_problems` reports, no default targets for the LLM's
            family, or a target module the LLM does not have.
    """
    problems = lora_problems({"llm_lora": dict(settings)}, None)
    if problems:
        raise ConfigError(" ".join(problems))
    model_type = llm.config.model_type
    targets = settings.get("target_modules") or DEFAULT_TARGETS.get(model_type)
    available = sorted({name.rsplit(".", 1)[-1] for name, m in llm.named_modules()
                        if isinstance(m, nn.Linear)})
    if not targets:
        raise ConfigError(f"model.llm_lora: no default target_modules for LLM type "
                          f"'{model_type}'; set model.llm_lora.target_modules to some of its "
                          f"linear layers: {', '.join(available)}.")
    for target in targets:
        if target not in available:
            raise ConfigError(f"model.llm_lora.target_modules: the {model_type} LLM has no "
                              f"linear layer '{target}'.{did_you_mean(target, available)} Its "
                              f"linear layers: {', '.join(available)}.")
    r = int(settings["r"])
    return {"r": r, "alpha": float(settings.get("alpha") or 2 * r),
            "dropout": float(settings.get("dropout") or 0.0), "target_modules": list(targets)}


def add_lora(model: Any, settings: Mapping[str, Any]) -> None:
    """Wrap `model.llm`'s target layers with fp32 LoRA adapters in place and let the
    model decide again what trains (the adapters join the Q-Former's parts).

    peft's `inject_adapter_in_model` leaves the LLM object and every module name above a
    wrapped layer as they were, so the adapters' parameter names (what run checkpoints
    store) are the LLM's with `.lora_A.default.weight` / `.lora_B.default.weight` added.
    The adapters are fp32 whatever `llm_precision` is (they train; the base stays frozen).
    Their dropout is peft's, drawn from each process's generator: unlike the Q-Former's,
    its masks change with how the global batch is split, which is logged when it is
    above 0 (docs/determinism.md)."""
    from peft import LoraConfig, inject_adapter_in_model

    from lavis_ib.common.containers import to_plain

    chosen = resolved_settings(to_plain(settings), model.llm)
    config = LoraConfig(r=chosen["r"], lora_alpha=chosen["alpha"], lora_dropout=chosen["dropout"],
                        target_modules=chosen["target_modules"], bias="none")
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(ADAPTER_SEED)
        # peft warns that adapters on torchao int8 layers cannot merge; merge_adapters
        # refuses that case itself with the fix, and export merges on an unquantised LLM
        warnings.filterwarnings("ignore", message="TorchaoLoraLinear was instantiated without")
        inject_adapter_in_model(config, model.llm, adapter_name=ADAPTER_NAME)
    for name, param in model.llm.named_parameters():
        if is_adapter_parameter(name):
            param.data = param.data.float()
    layers = len(adapter_layers(model.llm))
    model.llm_lora_settings = chosen
    counts = model.configure_trainable()
    logger.info("LoRA adapters on %d LLM layers (%s): r=%d alpha=%g dropout=%g, %d trainable "
                "adapter parameters", layers, ", ".join(chosen["target_modules"]), chosen["r"],
                chosen["alpha"], chosen["dropout"], counts.get("llm_lora", 0))
    if chosen["dropout"] > 0:
        logger.info("model.llm_lora.dropout %g draws from each process's generator: another "
                    "split of the global batch over processes gives other adapter masks (the "
                    "Q-Former's do not change; docs/determinism.md)", chosen["dropout"])


def adapter_layers(llm: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, peft LoRA layer) of every wrapped layer of `llm`, in module order."""
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in llm.named_modules() if isinstance(m, LoraLayer)]


def adapter_units(llm: nn.Module) -> list[nn.Module]:
    """The `lora_A` / `lora_B` linear layers of every wrapped layer: FSDP shards them as
    units of their own, apart from the (possibly bf16) frozen block around them (FSDP2
    shards modules with a forward, not their ModuleDict containers)."""
    return [part[name] for _, layer in adapter_layers(llm)
            for part in (layer.lora_A, layer.lora_B) for name in part]


def adapter_dropouts(llm: nn.Module) -> list[nn.Module]:
    """The adapters' dropout modules: they follow train/eval mode even when the rest of the
    frozen LLM stays in eval mode (`model.llm_train_mode: eval`)."""
    return [layer.lora_dropout for _, layer in adapter_layers(llm)]


@torch.no_grad()
def merge_adapters(llm: nn.Module) -> int:
    """Add every adapter's B @ A * alpha / r into its base weight and put the base layer
    back in the wrapper's place (the LLM's own module names again, for the Hugging Face
    export). Returns the number of merged layers. Refused on int8 base layers (merging
    would round the adapters away): export rebuilds the LLM unquantised first."""
    layers = adapter_layers(llm)
    quantised = [name for name, layer in layers if _is_quantised(layer.get_base_layer().weight)]
    if quantised:
        raise LavisIbError(
            f"merge_adapters: the LLM's layers are quantised ({quantised[0]}, ... "
            f"{len(quantised)} adapted layers): merging into int8 weights would round the "
            f"adapters away. Build the model with llm_quantization: none, load the checkpoint "
            f"and merge there (lavis-ib export RUN_DIR OUT_DIR does this).")
    for name, layer in layers:
        layer.merge(safe_merge=True)  # raises on NaNs instead of writing them into the LLM
        parent_name, _, child = name.rpartition(".")
        parent = llm.get_submodule(parent_name) if parent_name else llm
        setattr(parent, child, layer.get_base_layer())
    return len(layers)


def _is_quantised(weight: torch.Tensor) -> bool:
    # torchao's int8 weights are tensor subclasses; bitsandbytes' are Parameter subclasses
    return type(weight) not in (torch.Tensor, nn.Parameter)

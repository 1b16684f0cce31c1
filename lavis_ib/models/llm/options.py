"""Memory options of the frozen LLM (`llm_quantization`, `llm_lora`), applied after any route
built the model, so every route gets them the same way (`apply_llm_options`).

The keys are declared in models/config.py; their values are checked here, with the run and
the machine, before anything is built (`llm_option_problems`, called by the pre-flight)."""
from __future__ import annotations

from typing import Any, Mapping


def llm_option_problems(model: Mapping[str, Any], run: Mapping[str, Any] | None) -> list[str]:
    """Every problem of the model node's LLM options (and their fit with the run's
    strategy and device), one line each."""
    from lavis_ib.models.llm.lora import lora_problems
    from lavis_ib.models.llm.quantization import quantization_problems

    return [*quantization_problems(model, run), *lora_problems(model, run)]


def apply_llm_options(model: Any, cfg: Mapping[str, Any]) -> Any:
    """`model` with its LLM quantised and/or given LoRA adapters as `cfg` asks.

    Quantisation comes first, so adapters wrap the quantised layers (the torchao
    `int8_weight_only` base trains adapters as in QLoRA; `lavis-ib export` rebuilds the LLM
    unquantised and merges them there).
    """
    mode = cfg.get("llm_quantization") or "none"
    if mode != "none":
        from lavis_ib.models.llm.quantization import quantize_llm

        quantize_llm(model, mode)
    if cfg.get("llm_lora"):
        from lavis_ib.models.llm.lora import add_lora

        add_lora(model, cfg["llm_lora"])
        _follow_renamed_weights(model)
    return model


def _follow_renamed_weights(model: Any) -> None:
    """LoRA wraps a quantised layer, so its weight `<layer>.weight` is now
    `<layer>.base_layer.weight`: the list of frozen quantised weights DDP must leave alone
    follows the new names (a stale name would make DDP try to broadcast int8 tensors)."""
    ignored = set(getattr(model, "_ddp_params_and_buffers_to_ignore", None) or ())
    if ignored:
        model._ddp_params_and_buffers_to_ignore = [
            name for name, _ in model.named_parameters()
            if name.replace(".base_layer.", ".") in ignored]

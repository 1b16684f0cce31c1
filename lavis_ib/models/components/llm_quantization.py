"""Quantised loading of the frozen LLM (`model.llm_quantization`)."""
from __future__ import annotations

from typing import Any, Mapping

from lavis_ib.common.errors import ConfigError

MODES = ("none", "int8", "nf4", "int8_weight_only")


def quantization_problems(model: Mapping[str, Any], run: Mapping[str, Any] | None) -> list[str]:
    mode = model.get("llm_quantization") or "none"
    if mode not in MODES:
        return [f"model.llm_quantization: '{mode}' is not one of {', '.join(MODES)}."]
    if mode != "none":
        return [f"model.llm_quantization: '{mode}' is not available in this version."]
    return []


def quantize_llm(model: Any, mode: str) -> None:
    raise ConfigError(f"model.llm_quantization: '{mode}' is not available in this version.")

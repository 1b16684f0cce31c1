"""LoRA adapters on the LLM (`model.llm_lora`)."""
from __future__ import annotations

from typing import Any, Mapping

from lavis_ib.common.errors import ConfigError


def lora_problems(model: Mapping[str, Any], run: Mapping[str, Any] | None) -> list[str]:
    if model.get("llm_lora"):
        return ["model.llm_lora is not available in this version."]
    return []


def add_lora(model: Any, settings: Mapping[str, Any]) -> None:
    raise ConfigError("model.llm_lora is not available in this version.")

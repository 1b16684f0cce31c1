"""The model panel of the web demo: what is loaded (name, class, device, precision,
parameters, context, quantisation, LoRA) and the limits the page derives from it, so a
visitor knows what answers and why a slider stops where it does."""
from __future__ import annotations

from typing import Any

import torch


def _dtype_name(module: Any) -> str | None:
    params = list(module.parameters()) if isinstance(module, torch.nn.Module) else []
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in params})
    return ", ".join(dtypes) if dtypes else None


def _count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters()) if isinstance(module, torch.nn.Module) \
        else 0


def parameter_text(n: int) -> str:
    """1234567 -> '1,234,567 (1.23 M)'."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n:,} ({n / size:.2f} {unit})"
    return f"{n:,}"


def context_length(model: Any) -> int | None:
    """The LLM's position limit (`max_position_embeddings`); None for an LLM with relative
    positions (T5), which has no fixed context."""
    adapter = getattr(model, "adapter", None)
    if adapter is None or adapter.is_encoder_decoder:
        return None
    value = getattr(adapter.llm.config.get_text_config(), "max_position_embeddings", None)
    return int(value) if value else None


def model_facts(demo: Any) -> list[tuple[str, str]]:
    """(what, value) rows of the panel for a `DemoModel`."""
    model = demo.model
    rows = [("name", f"`{demo.label}`"), ("type", type(model).__name__),
            ("device", str(getattr(model, "device", "?")))]
    parts = [("ViT", "visual_encoder"), ("Q-Former", "qformer"), ("LLM", "llm")]
    precisions = [f"{name} {_dtype_name(getattr(model, attr))}" for name, attr in parts
                  if _dtype_name(getattr(model, attr, None))]
    rows.append(("precision", "; ".join(precisions) or _dtype_name(model) or "?"))
    total = _count(model)
    split = [f"{name} {parameter_text(_count(getattr(model, attr)))}" for name, attr in parts
             if isinstance(getattr(model, attr, None), torch.nn.Module)]
    rows.append(("parameters", parameter_text(total) + (f" ({'; '.join(split)})" if split else "")))
    adapter = getattr(model, "adapter", None)
    context = context_length(model)
    if adapter is not None and adapter.is_encoder_decoder:
        rows.append(("context length", f"no fixed limit (encoder-decoder LLM); prompts up to "
                                       f"{adapter.max_prompt_tokens} tokens"))
    else:
        rows.append(("context length", f"{context} tokens" if context else "not stated"))
    query = getattr(model, "query_tokens", None)
    if query is not None:
        rows.append(("soft prompts", f"{query.shape[1]} per image or frame"))
    report = (getattr(model, "load_report", None) or {}).get("llm_quantization")
    rows.append(("quantisation", "none" if not report else
                 f"{report['mode']}: {report['quantized_linear_layers']} linear layers of the LLM"))
    lora = getattr(model, "llm_lora_settings", None)
    rows.append(("LoRA", "none" if not lora else
                 ", ".join(f"{k}={v}" for k, v in sorted(lora.items()))))
    rows.append(("page limits", f"max length up to {demo.max_length_limit} tokens; prompts up "
                                f"to {demo.max_prompt_chars} characters"
                                + (f" and {demo.prompt_token_limit()} tokens beside one image "
                                   f"and a 1-token answer" if demo.prompt_token_limit() else "")))
    return rows


def facts_markdown(demo: Any) -> str:
    rows = ["| | |", "|---|---|"]
    rows += [f"| {what} | {value} |" for what, value in model_facts(demo)]
    return "\n".join(rows)

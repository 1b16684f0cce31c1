"""Inference of a model larger than one device: the frozen LLM's blocks spread over devices,
CPU memory and a disk folder by accelerate, the image path (ViT, Q-Former, projection) and
the LLM's input embeddings kept together on the main device, where the LLM's outputs
come back, so the model code never meets a tensor on another device."""
from __future__ import annotations

import logging
from typing import Any, Mapping

import torch

from lavis_ib.common.errors import ConfigError

logger = logging.getLogger(__name__)

OFFLOAD = ("cpu", "disk")


def _llm_input_embeddings(model) -> str:
    """The LLM-relative name of its input embedding module (kept on the main device:
    the adapter embeds prompt tokens there)."""
    embed = model.llm.get_input_embeddings()
    return next(name for name, module in model.llm.named_modules() if module is embed)


def _as_device(value: Any) -> str:
    """"cpu", "disk", "cuda:1", ...: accelerate's spelling (it compares with strings)."""
    if isinstance(value, int):
        return f"cuda:{value}"
    return value if value in OFFLOAD else str(torch.device(value))


def split_device_map(model, device_map: Mapping[str, Any]) -> tuple[torch.device, dict]:
    """(main device, the LLM's accelerate map) of a user's map over our module names
    (`visual_encoder`, `qformer`, `llm.model.layers.3`, ...).

    Raises:
        ConfigError: an image-path module off the main device, an unknown module, or
            the LLM's input embeddings offloaded.
    """
    names = {name for name, _ in model.named_modules()} | {n for n, _ in model.named_parameters()}
    unknown = sorted(k for k in device_map if k not in names)
    if unknown:
        raise ConfigError(f"device_map names {unknown}, which are not modules of "
                          f"{type(model).__name__}; use names from model.named_modules().")
    image_path = {k: _as_device(v) for k, v in device_map.items()
                  if k != "llm" and not k.startswith("llm.")}
    llm = {k[4:] if k != "llm" else "": _as_device(v) for k, v in device_map.items()
           if k == "llm" or k.startswith("llm.")}
    mains = {str(v) for v in image_path.values()}
    if len(mains) > 1 or "disk" in mains:
        raise ConfigError(f"device_map puts the image path on {sorted(mains)}: the ViT, "
                          f"Q-Former, query tokens and projection must share one device.")
    main = torch.device(mains.pop()) if mains else torch.device("cpu")
    unmapped = [name for name, _ in model.named_children() if name != "llm"
                and not any(k == name or k.startswith(name + ".") for k in image_path)]
    if unmapped and image_path:
        logger.info("device_map: %s follow the image path to %s", unmapped, main)
    _check_embeddings(model, llm, main, f"keep them on the image path's device {main}")
    return main, llm


def auto_device_map(model, max_memory: Mapping[Any, Any] | None) -> tuple[torch.device, dict]:
    """accelerate's balanced map of the LLM's blocks (never split inside a decoder block),
    the image path and the input embeddings on the first GPU (or the CPU)."""
    from accelerate import infer_auto_device_map

    main = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    blocks = list(getattr(model.llm, "_no_split_modules", None) or [])
    llm = infer_auto_device_map(model.llm, max_memory=dict(max_memory) if max_memory else None,
                                no_split_module_classes=blocks)
    llm = {k: _as_device(v) for k, v in llm.items()}
    _check_embeddings(model, llm, main, "max_memory leaves the main device no room for them")
    return main, llm


def _check_embeddings(model, llm: dict, main: torch.device, fix: str) -> None:
    """The adapter embeds prompt tokens with the LLM's input embeddings on the main
    device: they may not be elsewhere (on the CPU they are, when the CPU is the main)."""
    embed = _llm_input_embeddings(model)
    placed = next((v for k, v in sorted(llm.items(), key=lambda kv: -len(kv[0]))
                   if k == "" or embed == k or embed.startswith(k + ".")), str(main))
    if str(placed) != str(main):
        raise ConfigError(f"device_map puts the LLM's input embeddings (llm.{embed}) on "
                          f"{placed}; {fix}.")


def dispatch(model, device_map: str | Mapping[str, Any], offload_folder: str | None = None,
             max_memory: Mapping[Any, Any] | None = None):
    """Place `model` by `device_map` ("auto" or {module name: device | "cpu" | "disk"}) for
    inference; returns the model. Offloaded LLM weights load layer by layer as it runs."""
    from accelerate import dispatch_model

    if (getattr(model, "load_report", None) or {}).get("llm_quantization"):
        raise ConfigError("device_map with llm_quantization is not supported: quantise, or "
                          "spread the LLM over devices, not both.")
    if device_map == "auto":
        main, llm_map = auto_device_map(model, max_memory)
    elif isinstance(device_map, Mapping):
        main, llm_map = split_device_map(model, device_map)
    else:
        raise ConfigError(f"device_map must be 'auto' or a mapping of module names to devices; "
                          f"got {device_map!r}.")
    if "disk" in {str(v) for v in llm_map.values()} and not offload_folder:
        raise ConfigError("device_map offloads LLM layers to 'disk': give offload_folder=<dir>.")
    for name, child in model.named_children():
        if name != "llm":
            child.to(main)
    for name, param in model.named_parameters(recurse=False):
        param.data = param.data.to(main)
    if llm_map:
        dispatch_model(model.llm, device_map=llm_map, main_device=str(main),
                       offload_dir=offload_folder)
    else:
        model.llm.to(main)
    counts: dict[str, int] = {}
    for device in llm_map.values():
        counts[str(device)] = counts.get(str(device), 0) + 1
    logger.info("device_map: image path on %s; LLM modules per place %s", main, counts)
    model.device_map = {"main": str(main), "llm": {k: str(v) for k, v in llm_map.items()}}
    return model

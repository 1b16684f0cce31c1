"""`load_model`, `load_preprocess`, `load_model_and_preprocess`, `model_zoo` (LAVIS API).

LAVIS's loading functions by registered name, so LAVIS code loads lavis_ib models
unchanged; overrides are checked against the model's config before anything is built."""
from __future__ import annotations

from typing import Any

import torch
from omegaconf import OmegaConf

from lavis_ib.common.project_files import load_yaml
from lavis_ib.common.quiet import quiet_torchao_import
from lavis_ib.common.devices import resolve_device
from lavis_ib.common.errors import ConfigError, did_you_mean
from lavis_ib.common.precision import with_resolved_precisions
from lavis_ib.common.registry import registry
from lavis_ib.models.config import accepted_keys, model_problems
from lavis_ib.processors.build import build_processors


def model_config(name: str, model_type: str, overrides: dict[str, Any]):
    """(model class, its config node with `overrides` merged, the default `preprocess` node).
    An override must name a setting of the type's default config or one every model node
    accepts (`models.config.accepted_keys`); nothing is built."""
    model_cls = registry.get_model_class(name)
    default = load_yaml(model_cls.default_config_path(model_type), "model default config")
    model_cfg = default.get("model") or OmegaConf.create({})
    known = accepted_keys(name, model_cfg)
    for key in overrides:
        if key not in known:
            raise ConfigError(f"load_model('{name}', '{model_type}'): unknown setting '{key}'."
                              f"{did_you_mean(key, known)} Settings: {', '.join(sorted(known))}.")
    model_cfg = OmegaConf.merge(model_cfg, overrides)
    model_cfg.arch, model_cfg.model_type = name, model_type
    return model_cls, model_cfg, default.get("preprocess")


def check_model_config(name: str, model_type: str, overrides: dict[str, Any],
                       device: str | None = None) -> None:
    """The pre-flight of a model node given on a command line (`--model`, `--options`,
    `--device`): registered name and type, known setting names, values in range and the
    LLM memory options against the device (the checks a project's `model:` gets), without
    building anything, so a typo costs a second rather than a 7B load."""
    from lavis_ib.common.containers import to_plain
    from lavis_ib.models.llm.options import llm_option_problems

    node = to_plain(model_config(name, model_type, overrides)[1])
    problems = model_problems(node) + llm_option_problems(node, {"device": device} if device else None)
    if problems:
        raise ConfigError(f"--model {name}:{model_type} --options: " + " ".join(problems))


def _placed(model, device: torch.device, is_eval: bool, device_map: Any,
            offload_folder: str | None, max_memory: Any):
    """The built model in eval mode if asked, on `device` or spread by `device_map`."""
    if is_eval:
        model.eval()
    if device_map is None:
        return model.to(device)
    if not is_eval:
        raise ConfigError("device_map is for inference: pass is_eval=True (training spreads "
                          "a model with run.distributed: fsdp).")
    from lavis_ib.models.device_map import dispatch

    return dispatch(model, device_map, offload_folder=offload_folder, max_memory=max_memory)


def load_model(name: str, model_type: str, is_eval: bool = False,
               device: str | torch.device = "cpu", device_map: Any = None,
               offload_folder: str | None = None, max_memory: Any = None, **overrides: Any):
    """Build a registered model from its model type's default YAML.

    Args:
        name: registered model name, e.g. "instructblip".
        model_type: e.g. "vicuna7b", "flant5xl", "tiny_vicuna".
        is_eval: put the model in eval mode.
        device: "cpu", "cuda", "auto"; a per-device `vit_precision` / `llm_precision`
            (the shipped types' `{cuda: ..., cpu: fp32}`) takes this device's entry.
        device_map: inference over several places (`lavis_ib.models.device_map`): "auto",
            or {module name: "cuda:1" | "cpu" | "disk"}; `device` then only picks the
            precisions. `offload_folder` holds "disk" layers; `max_memory` as accelerate's.
        **overrides: merged into the model config (e.g. ``pretrained="/path/to/dir"``).
    """
    model_cls, model_cfg, _ = model_config(name, model_type, overrides)
    device = resolve_device(device)
    with quiet_torchao_import():
        model = model_cls.from_config(with_resolved_precisions(model_cfg, device))
    return _placed(model, device, is_eval, device_map, offload_folder, max_memory)


def load_preprocess(config: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(vis_processors, txt_processors), each {"train": ..., "eval": ...}, from a
    ``preprocess`` node with ``vis_processor`` and ``text_processor`` groups."""
    config = config or {}
    return (build_processors(config.get("vis_processor")),
            build_processors(config.get("text_processor")))


def load_model_and_preprocess(name: str, model_type: str, is_eval: bool = False,
                              device: str | torch.device = "cpu", device_map: Any = None,
                              offload_folder: str | None = None, max_memory: Any = None,
                              **overrides: Any):
    """(model, vis_processors, txt_processors).

    The processors come from the model type's default YAML; a model loaded from a
    checkpoint directory that carries its own image processor settings (image size,
    mean/std) overrides them through ``model.preprocess_config(default)``. `device_map`,
    `offload_folder` and `max_memory` as in `load_model`.
    """
    model_cls, model_cfg, preprocess = model_config(name, model_type, overrides)
    device = resolve_device(device)
    with quiet_torchao_import():
        model = model_cls.from_config(with_resolved_precisions(model_cfg, device))
    model = _placed(model, device, is_eval, device_map, offload_folder, max_memory)
    preprocess = model.preprocess_config(preprocess)
    vis, txt = load_preprocess(preprocess)
    return model, vis, txt


class ModelZoo:
    """Registered models and their model types; `print(model_zoo)` shows a table."""

    def __iter__(self):
        for name in registry.list_models():
            yield name, sorted(registry.get_model_class(name).PRETRAINED_MODEL_CONFIG_DICT)

    def __len__(self) -> int:
        return sum(len(types) for _, types in self)

    def __str__(self) -> str:
        rows = [f"{'Architectures':<22}Types", "=" * 60]
        rows += [f"{name:<22}{', '.join(types)}" for name, types in self]
        return "\n".join(rows)


model_zoo = ModelZoo()

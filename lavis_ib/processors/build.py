"""Building processors from YAML nodes such as ``{name: blip_image_eval, image_size: 224}``:
the one place that turns a node into a registered processor, so a missing name, an unknown
processor or a misspelt setting is one `ConfigError` that names it and the known choices."""
from __future__ import annotations

import inspect
from typing import Any, Mapping

from lavis_ib.common.containers import to_plain
from lavis_ib.common.errors import ConfigError, did_you_mean


def _plain(cfg: Any) -> dict[str, Any]:
    cfg = to_plain(cfg)
    if cfg is None:
        return {}
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise ConfigError(f"a processor config must be a mapping, got {cfg!r}")


def processor_kwargs(cls: type, cfg: Any) -> dict[str, Any]:
    """The constructor arguments of `cls` from a config node, rejecting unknown keys."""
    kwargs = _plain(cfg)
    kwargs.pop("name", None)
    params = inspect.signature(cls.__init__).parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    allowed = [n for n in params if n != "self"]
    for key in kwargs:
        if key not in params and not accepts_any:
            raise ConfigError(f"processor '{cls.__name__}' has no setting '{key}'."
                              f"{did_you_mean(key, allowed)} Settings: {', '.join(allowed)}.")
    return kwargs


def build_processor(cfg: Any) -> Any:
    """A processor from ``{name: ..., **settings}``; None for an empty node."""
    from lavis_ib.common.registry import registry

    node = _plain(cfg)
    if not node:
        return None
    if "name" not in node:
        raise ConfigError(f"processor config {node} has no 'name'; "
                          f"registered: {', '.join(registry.list_processors())}.")
    return registry.get_processor_class(node["name"]).from_config(node)


def build_processors(cfg: Any) -> dict[str, Any]:
    """{"train": processor, "eval": processor} from a node with `train`/`eval` entries."""
    node = _plain(cfg)
    unknown = set(node) - {"train", "eval"}
    if unknown:
        raise ConfigError(f"processor group has unknown entries {sorted(unknown)}; "
                          f"use 'train' and 'eval'.")
    return {split: build_processor(node.get(split)) for split in ("train", "eval")}

"""`BaseProcessor`: turns one raw item (PIL image, video path, string) into model input.

Every registered processor derives from it, so each is built the same way from a YAML node,
with unknown settings refused (`lavis_ib.processors.build.processor_kwargs`)."""
from __future__ import annotations

from typing import Any


class BaseProcessor:
    """Base of registered processors: ``from_config(cfg)`` builds one from a YAML node
    (``{name: ..., **kwargs}``); calling it processes one item."""

    def __call__(self, item: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__")

    @classmethod
    def from_config(cls, cfg: Any = None) -> "BaseProcessor":
        from lavis_ib.processors.build import processor_kwargs

        return cls(**processor_kwargs(cls, cfg))

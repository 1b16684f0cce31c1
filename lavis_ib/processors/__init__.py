"""Processors: raw images, videos and text -> model inputs. Registered by name, so a
dataset's or model's YAML picks its preprocessing with ``{name: ..., **settings}`` and a
plugin adds its own without touching the package."""
from lavis_ib.processors.base_processor import BaseProcessor
from lavis_ib.processors.build import build_processor, build_processors

__all__ = ["BaseProcessor", "build_processor", "build_processors"]

"""Processors: raw images, videos and text -> model inputs. Registered by name."""
from lavis_ib.processors.base_processor import BaseProcessor
from lavis_ib.processors.build import build_processor, build_processors

__all__ = ["BaseProcessor", "build_processor", "build_processors"]

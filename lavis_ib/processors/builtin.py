"""Imported on the first processor lookup: registers the built-in processors."""
from lavis_ib.processors import image, templates, text, video  # noqa: F401

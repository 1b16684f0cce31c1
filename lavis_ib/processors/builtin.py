"""Imported on the first processor lookup: registers the built-in processors.

The registry imports this one list itself, so no lookup depends on which modules a caller
happened to import first, and `import lavis_ib` stays light."""
from lavis_ib.processors import image, templates, text, video  # noqa: F401

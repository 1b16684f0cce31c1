"""Imported on the first registry lookup: registers the built-in entries of this package."""
from lavis_ib.models.instructblip import model  # noqa: F401  (registers "instructblip")

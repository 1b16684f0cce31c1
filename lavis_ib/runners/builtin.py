"""Imported on the first registry lookup: registers the built-in entries of this package."""
from lavis_ib.runners import runner_iter, schedulers  # noqa: F401

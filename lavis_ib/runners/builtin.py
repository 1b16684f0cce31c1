"""Imported on the first registry lookup: registers the built-in entries of this package.

The registry imports this one list itself, so no lookup depends on which modules a caller
happened to import first, and `import lavis_ib` stays light."""
from lavis_ib.runners import runner_iter, schedulers  # noqa: F401

"""Imported on the first registry lookup: registers the built-in entries of this package."""

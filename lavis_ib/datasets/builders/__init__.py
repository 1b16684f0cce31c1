"""Dataset builders, one per dataset, registered by decorator.

A builder is the registered name a project's `datasets:` entry refers to: it knows the
dataset's default YAML, its files and its dataset classes (`BaseDatasetBuilder`)."""
from lavis_ib.datasets.builders.base_builder import BaseDatasetBuilder

__all__ = ["BaseDatasetBuilder"]

"""Dataset builders, one per dataset, registered by decorator.

A builder is what a project's `datasets:` entry names: it knows the dataset's default YAML,
its files and its dataset classes (`BaseDatasetBuilder`)."""
from lavis_ib.datasets.builders.base_builder import BaseDatasetBuilder

__all__ = ["BaseDatasetBuilder"]

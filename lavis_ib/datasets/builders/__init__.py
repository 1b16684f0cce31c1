"""Dataset builders, one per dataset, registered by decorator."""
from lavis_ib.datasets.builders.base_builder import BaseDatasetBuilder

__all__ = ["BaseDatasetBuilder"]

"""Datasets: builders per dataset, dataset classes by annotation format, loaders and mixing.

LAVIS's shape (a builder reads a dataset's YAML and builds its splits), so a LAVIS user
finds datasets where they expect; docs/datasets.md says what to download for each."""

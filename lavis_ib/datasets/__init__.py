"""Datasets: builders per dataset, dataset classes by annotation format, mixing."""

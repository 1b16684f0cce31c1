"""Test and demo support shipped with the library: the dataset fixture writer (`fixtures`) and
the builders of the tiny tokenizers shipped as package data (`tiny_assets`)."""

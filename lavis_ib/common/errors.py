"""Errors users see: one line naming the thing that is wrong and how to fix it.

Entry points catch `LavisIbError` and print its message without a traceback, so every
message here must stand on its own.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class LavisIbError(Exception):
    """Base of every error lavis_ib raises on purpose for bad input."""


class RegistryError(LavisIbError, KeyError):
    """An unknown or duplicate registered name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(LavisIbError, ValueError):
    """A project file, default YAML or override that cannot be used."""


class DataError(LavisIbError, RuntimeError):
    """A dataset file that is missing or unreadable."""


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The choice that best matches a misspelt name, or None."""
    matches = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' or an empty string, to append to a message."""
    match = closest(name, choices)
    return f" Did you mean '{match}'?" if match else ""

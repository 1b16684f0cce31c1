"""Resolving a local directory or a Hugging Face hub id to a directory on disk.

A hub id is looked up in the local Hugging Face cache first; it is downloaded only when the
hub is reachable and `HF_HUB_OFFLINE` is not set. Offline, a missing id fails with one line
that says how to point at a local copy instead.
"""
from __future__ import annotations

import os
import re

from lavis_ib.common.errors import LavisIbError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def resolve_dir(path: str, what: str = "pretrained") -> str:
    """A local directory for `path` (a directory, or a hub id such as
    "Salesforce/instructblip-vicuna-7b").

    Raises:
        LavisIbError: the directory does not exist, or the hub id is not available.
    """
    path = os.path.expanduser(str(path))
    if os.path.isdir(path):
        return path
    if not HUB_ID.match(path) or os.path.exists(path):
        raise LavisIbError(f"{what}='{path}' is neither an existing directory nor a Hugging "
                           f"Face hub id.")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(path, local_files_only=True)
    except Exception:  # not in the local cache
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    hint = (f"download it where the hub is reachable (`hf download {path} --local-dir DIR`) "
            f"and pass {what}=DIR")
    if offline:
        raise LavisIbError(f"{what}='{path}' is a hub id, it is not in the local Hugging Face "
                           f"cache and HF_HUB_OFFLINE is set; {hint}.")
    try:
        return snapshot_download(path)
    except Exception as exc:
        raise LavisIbError(f"{what}='{path}' could not be downloaded ({type(exc).__name__}); "
                           f"{hint}.") from None

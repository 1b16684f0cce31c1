"""The manifest that lets a checkpoint prove it is whole, and finding checkpoints that do
(atomic writes and fsync live in `lavis_ib.common.durable_files`).

A checkpoint lists its files' sizes and checksums (`manifest`), so a damaged one is found
and named before anything is loaded (`verify`), and resuming takes the newest that verifies."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from typing import Any

from lavis_ib.common.durable_files import fsync_path
from lavis_ib.common.errors import ConfigError, LavisIbError

logger = logging.getLogger(__name__)
_STEP_DIR = re.compile(r"^step_(\d+)$")

META = "meta.json"
_CHUNK = 1 << 20


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest(folder: str) -> dict[str, dict[str, Any]]:
    """{relative path: {"size", "sha256"}} of every file under `folder` except meta.json;
    each file and folder is fsynced on the way.

    The manifest goes into the checkpoint's `meta.json`, written after every file and the
    folder itself are fsynced, and before the folder is renamed into place.
    """
    files = {}
    for root, dirs, names in os.walk(folder):
        for name in sorted(names):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder)
            if rel == META:
                continue
            fsync_path(path)
            files[rel] = {"size": os.path.getsize(path), "sha256": sha256(path)}
        fsync_path(root)
    return files


def verify(folder: str, checksums: bool = True) -> str | None:
    """None when `folder` is a whole checkpoint, else why not (naming the file): a 0-byte
    `trainer.json`, a truncated shard or an edited file is found before anything is loaded.
    `checksums=False` compares the listed sizes only (no file is read: the pre-flight's
    quick look)."""
    meta_path = os.path.join(folder, META)
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except FileNotFoundError:
        return f"{meta_path} is missing"
    except (OSError, ValueError) as exc:
        return f"{meta_path} is unreadable ({type(exc).__name__})"
    files = meta.get("files") if isinstance(meta, dict) else None
    if not isinstance(files, dict) or not files:
        return f"{meta_path} lists no files (written by an older lavis_ib or damaged)"
    for rel, want in sorted(files.items()):
        if not isinstance(want, dict):
            return (f"{meta_path} entry '{rel}' is {type(want).__name__} {want!r:.40}, not an "
                    f"object with size and sha256")
        outside = _outside(folder, rel)
        if outside:
            return f"{meta_path} lists '{rel}', {outside} (nothing outside was read)"
        path = os.path.join(folder, rel)
        if not os.path.isfile(path):
            return f"{path} is missing"
        size = os.path.getsize(path)
        if size != want.get("size"):
            return f"{path} has {size} bytes, meta.json lists {want.get('size')}"
        if checksums and sha256(path) != want.get("sha256"):
            return f"{path} does not match its sha256 in meta.json"
    return None


def _outside(folder: str, rel: str) -> str | None:
    """Why the listed name `rel` is not a file inside `folder` (an absolute path, a `..`
    part, a symlink leading out), else None; checked before the file is opened."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel):
        return "which is not a relative path inside the checkpoint folder"
    if ".." in rel.split("/"):
        return "which climbs out of the checkpoint folder ('..')"
    root = os.path.realpath(folder)
    real = os.path.realpath(os.path.join(folder, rel))
    if os.path.commonpath([root, real]) != root or real == root:
        return f"which resolves to {real}, outside the checkpoint folder (a symlink)"
    return None


def list_checkpoints(root: str) -> list[tuple[int, str]]:
    """(step, path) of the complete step checkpoints under `root`, oldest first."""
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        match = _STEP_DIR.match(name)
        path = os.path.join(root, name)
        if match and os.path.isfile(os.path.join(path, META)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def newest_verified(root: str, checksums: bool = True) -> str | None:
    """The newest step checkpoint under `root` whose files verify; each damaged newer one
    is logged with the reason and skipped (the sizes-only look, `checksums=False`, is
    quiet: the full check that follows it logs)."""
    for step, path in reversed(list_checkpoints(root)):
        reason = verify(path, checksums)
        if reason is None:
            return path
        if checksums:
            logger.warning("skipping checkpoint %s: %s", path, reason)
    return None


def check_verified(path: str, checksums: bool = True) -> dict[str, Any]:
    """meta.json of a checkpoint folder that verifies; else one error naming the file."""
    if not os.path.isfile(os.path.join(path, META)):
        raise ConfigError(f"'{path}' is not a complete lavis_ib checkpoint (no meta.json); "
                          f"give a checkpoints/step_* or checkpoints/best folder.")
    reason = verify(path, checksums)
    if reason is not None:
        raise LavisIbError(f"checkpoint '{path}' is damaged: {reason}; give another "
                           f"checkpoint or use run.resume=auto, which skips damaged ones.")
    with open(os.path.join(path, META)) as f:
        return json.load(f)


def resolve_checkpoint(path: str, checksums: bool = True) -> str:
    """A checkpoint folder from a checkpoint path or a run folder (its newest checkpoint
    that verifies)."""
    if os.path.isfile(os.path.join(path, META)):
        return path
    for root in (os.path.join(path, "checkpoints"), path):
        if list_checkpoints(root):
            found = newest_verified(root, checksums)
            if found:
                return found
            newest = list_checkpoints(root)[-1][1]
            raise LavisIbError(f"every checkpoint under '{root}' is damaged (the newest: "
                               f"{verify(newest, checksums)}); give a checkpoint folder "
                               f"that verifies.")
    raise ConfigError(f"no complete checkpoint under '{path}'; give a run folder or a "
                      f"checkpoints/step_* folder.")



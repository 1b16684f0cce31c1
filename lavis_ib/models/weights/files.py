"""Weight files: reading Hugging Face checkpoint directories and LAVIS `.pth` files, and
writing the safetensors file of an export.

Safetensors files are preferred (their headers give the tensor names without loading);
`pytorch_model*.bin` and `.pth` files are read with `torch.load(weights_only=True)` only.
"""
from __future__ import annotations

import glob
import os

import torch

from lavis_ib.common.errors import LavisIbError


def umask_mode() -> int:
    """The mode an ordinary `open()` gives a new file: 0o666 less this process's umask
    (0o644 under the usual umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_safetensors(tensors: dict[str, torch.Tensor], path: str) -> str:
    """Write `tensors` to the safetensors file `path` with the mode every other file of
    the export gets (`umask_mode`): safetensors itself creates its files 0600 (a private
    temporary file renamed into place), so a model written for others to load would be
    readable by its owner only."""
    from safetensors.torch import save_file

    save_file(tensors, path, metadata={"format": "pt"})
    os.chmod(path, umask_mode())
    return path


def iter_shards(directory: str):
    """The state dicts of an HF checkpoint directory's weight files, one shard at a time
    (safetensors, else `pytorch_model*.bin` read with `weights_only=True`)."""
    files = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
    if files:
        from safetensors.torch import load_file

        for f in files:
            yield load_file(f)
        return
    files = sorted(glob.glob(os.path.join(directory, "pytorch_model*.bin")))
    if not files:
        raise LavisIbError(f"'{directory}' has no *.safetensors or pytorch_model*.bin weights.")
    for f in files:
        yield load_bin(f)


def load_bin(path: str) -> dict:
    """A `.bin` state dict read with `weights_only=True`; a file that holds anything but
    tensors (a hostile or foreign pickle) or is damaged is one LavisIbError line."""
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        # torch's own text suggests weights_only=False: never repeat that for a foreign file
        detail = "it holds objects other than tensors" if isinstance(exc, pickle.UnpicklingError) \
            else f"{type(exc).__name__}: {str(exc).strip()[:160]}"
        raise LavisIbError(f"'{path}' is not a plain weights file that torch.load(weights_only=True) "
                           f"accepts ({detail}); use the checkpoint's safetensors or re-save it "
                           f"from a trusted source.") from None


def checkpoint_keys(directory: str) -> set[str]:
    """Tensor names of an HF checkpoint directory (safetensors headers only)."""
    files = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
    if files:
        from safetensors import safe_open

        keys: set[str] = set()
        for f in files:
            with safe_open(f, framework="pt") as handle:
                keys.update(handle.keys())
        return keys
    return {k for shard in iter_shards(directory) for k in shard}


def read_state_dict(directory: str) -> dict[str, torch.Tensor]:
    """All tensors of an HF checkpoint directory (small checkpoints; see `iter_shards`)."""
    state: dict[str, torch.Tensor] = {}
    for shard in iter_shards(directory):
        state.update(shard)
    return state


def read_pth(path: str, what: str) -> dict[str, torch.Tensor]:
    """The state dict in a .pth file (a bare dict or `{"model": ...}`), tensors only.

    Raises:
        LavisIbError: naming `what`, when the file is absent, unreadable or no state dict.
    """
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise LavisIbError(f"{what}='{path}' does not exist.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LavisIbError(f"{what}='{path}' cannot be read with torch.load(weights_only=True): "
                           f"{first}") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise LavisIbError(f"{what}='{path}' holds {type(obj).__name__}, not a state dict.")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}

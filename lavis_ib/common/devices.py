"""Device names in configs and API calls (`auto`, `cpu`, `cuda`, `cuda:N`).

One reading of a device name for every entry point, so `cuda` means this process's local
rank under torchrun and a name no machine has fails as a `ConfigError`, not deep in torch."""
from __future__ import annotations

import torch

from lavis_ib.common.errors import ConfigError


def resolve_device(name: "str | torch.device", local_rank: int = 0,
                   key: str = "device") -> torch.device:
    """The torch device for `name`; plain `cuda` means this process's local rank.

    Raises:
        ConfigError: an unknown name, or `cuda` without a visible CUDA device.
    """
    if isinstance(name, torch.device):
        return name
    name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"{key} is '{name}' but no CUDA device is visible; use cpu.")
        return torch.device("cuda", local_rank if name == "cuda" else torch.device(name).index)
    if name != "cpu":
        raise ConfigError(f"{key}: '{name}' is not one of auto, cpu, cuda, cuda:N.")
    return torch.device("cpu")

"""Reading checkpoint files without executing pickled code.

A checkpoint is data someone may hand you; reading it must never run code. Three readers in
torch would unpickle arbitrary objects (`.pt` files, DCP's `.metadata`, DCP byte entries), so
each is replaced here; anything else is refused with one `UnsafeCheckpointError` line."""
from __future__ import annotations

import io
import os
import pathlib
import pickle
import warnings
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint import filesystem as _fs
from torch.distributed.checkpoint import metadata as _md
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.metadata import StorageMeta

from lavis_ib.common.errors import LavisIbError

_METADATA_CLASSES = {
    ("torch.distributed.checkpoint.metadata", name)
    for name in ("Metadata", "TensorStorageMetadata", "BytesStorageMetadata",
                 "ChunkStorageMetadata", "TensorProperties", "StorageMeta", "MetadataIndex",
                 "_MEM_FORMAT_ENCODING")
} | {("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
     ("torch", "Size"), ("torch.serialization", "_get_layout"),
     ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"),
     ("pathlib", "WindowsPath"), ("pathlib", "PureWindowsPath")}
_MODULES = {"torch.distributed.checkpoint.metadata": _md,
            "torch.distributed.checkpoint.filesystem": _fs, "pathlib": pathlib}


class UnsafeCheckpointError(LavisIbError):
    """A checkpoint file asked to build an object outside the allow-list; nothing ran."""


class MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP metadata; any global outside the allow-list is refused before use.

    The allow-list: torch's own DCP metadata classes, `torch.Size`, dtypes, the layout
    helper and `pathlib` paths.
    """

    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if (module, name) in _METADATA_CLASSES:
            if module == "torch":
                return torch.Size
            if module == "torch.serialization":
                return torch.serialization._get_layout
            return getattr(_MODULES[module], name)
        raise UnsafeCheckpointError(
            f"refused to read '{self.source}': it asks to build {module}.{name}, which a "
            f"checkpoint index never holds (the file is damaged or doctored; nothing was run).")


class SafeFileSystemReader(FileSystemReader):
    """FileSystemReader whose `.metadata` goes through `MetadataUnpickler`.

    DCP's `.metadata` is the index of a `model/` or `optim/` folder; torch's
    `FileSystemReader.read_metadata` reads it with `pickle.load`.
    """

    def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as stream:
            try:
                metadata = MetadataUnpickler(stream, str(path)).load()
            except UnsafeCheckpointError:
                raise
            except Exception as exc:  # truncated or garbage bytes
                raise UnsafeCheckpointError(f"cannot read '{path}': {type(exc).__name__}: "
                                            f"{exc}") from None
        if not isinstance(metadata, _md.Metadata):
            raise UnsafeCheckpointError(f"'{path}' does not hold a DCP Metadata object.")
        _check_inside(metadata, str(self.path), str(path))
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def _check_inside(metadata: Any, folder: str, source: str) -> None:
    """Refuse an index whose entries name a data file outside its folder (`..`, an
    absolute path, a symlink out): DCP would open it."""
    root = os.path.realpath(folder)
    for info in (getattr(metadata, "storage_data", None) or {}).values():
        rel = str(getattr(info, "relative_path", ""))
        real = os.path.realpath(os.path.join(folder, rel))
        if os.path.isabs(rel) or ".." in rel.split("/") or os.path.commonpath([root, real]) != root:
            raise UnsafeCheckpointError(
                f"refused to read '{source}': it names the data file '{rel}', outside "
                f"{folder} (the index is damaged or doctored; nothing outside was read).")


class SafeLoadPlanner(DefaultLoadPlanner):
    """DefaultLoadPlanner whose byte entries are read with `weights_only=True`.

    DCP byte entries inside a `.distcp` file (the optimizer's `param_groups`) are read by
    torch's `DefaultLoadPlanner.load_bytes` with `torch.load(weights_only=False)`.
    """

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        try:
            obj = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as exc:
            raise UnsafeCheckpointError(
                f"refused a byte entry '{read_item.dest_index.fqn}' of a .distcp file: "
                f"{_why(exc)} (nothing was run).") from None
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


def _why(exc: Exception) -> str:
    """The line of torch's weights-only refusal that names the object (not its advice)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if "Unsupported" in line or "WeightsUnpickler" in line]
    return (named or lines or [type(exc).__name__])[0]


def load_pt(path: str) -> Any:
    """A `.pt` file of tensors and plain containers; anything else is refused.

    These are a rank's RNG and data-loader state, read with `torch.load(weights_only=True)`,
    which only builds tensors and plain containers.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(f"refused to read '{path}': {_why(exc)} "
                                    f"(nothing was run).") from None


def dcp_load(state: dict[str, Any], folder: str, single: bool) -> None:
    """DCP load through the pickle-free reader and planner. The index is read once
    first, so a refusal surfaces as itself rather than inside DCP's wrapped errors."""
    SafeFileSystemReader(folder).read_metadata()
    with warnings.catch_warnings():  # DCP warns on every call without a process group
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, storage_reader=SafeFileSystemReader(folder),
                 planner=SafeLoadPlanner(), no_dist=single)


def raise_unsafe(exc: BaseException) -> None:
    """Re-raise a refusal of the safe readers (wrapped by DCP) as itself."""
    failures = getattr(exc, "failures", None) or {}
    for item in [exc, *failures.values()]:
        inner = item[0] if isinstance(item, tuple) else item
        if isinstance(inner, UnsafeCheckpointError):
            raise UnsafeCheckpointError(str(inner)) from None


def check_no_extra_weights(path: str, wanted: set[str]) -> None:
    """Raise when the checkpoint holds trainable weights the model lacks: DCP would load
    the model's keys and silently leave the others (e.g. LoRA adapters of a run whose
    model was rebuilt without `model.llm_lora`)."""
    folder = str(pathlib.Path(path) / "model")
    stored = SafeFileSystemReader(folder).read_metadata().state_dict_metadata
    extra = sorted(set(stored) - wanted)
    if not extra:
        return
    hint = (" They are LoRA adapters: build the model with the run's model.llm_lora (in the "
            "run's config.yaml)." if any(".lora_A." in k or ".lora_B." in k for k in extra)
            else " Build the model with the run's model settings (the run's config.yaml).")
    raise LavisIbError(f"checkpoint '{path}' holds {len(extra)} trainable tensors the model "
                       f"does not have, e.g. {extra[:3]}.{hint}")

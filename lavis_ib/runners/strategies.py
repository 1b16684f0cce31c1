"""Distribution strategies: `none`, `ddp` and `fsdp` (FSDP2), under torchrun.

One place decides how a model is placed, wrapped or sharded and how gradients are
synchronised, so the runner's step loop is the same for all three (`Strategy`,
`setup_distributed`)."""
from __future__ import annotations

import contextlib
import datetime
import functools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

from lavis_ib.common.devices import resolve_device
from lavis_ib.common.errors import ConfigError

if TYPE_CHECKING:
    from lavis_ib.common.schema import RunConfig

# the model contract's inference methods (docs/architecture.md)
FORWARD_METHODS = ("generate", "score_candidates")
# methods other than `forward` by which models enter a submodule that may become a unit:
# timm's ViT is run by `forward_features`, and its own parameters (class token, position
# embedding) form a unit when the root mixes dtypes
UNIT_METHODS = ("forward_features",)


@dataclass
class DistInfo:
    """Where this process sits: rank, world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False


def setup_distributed(run: RunConfig) -> DistInfo:
    """Join the torchrun process group for `ddp`/`fsdp`; nothing for `none`. `run` is
    the typed RunConfig (common/schema.py).

    gloo on CPU, NCCL on CUDA, with a timeout so a hang fails fast. Multi-node:
    `torchrun --nnodes N --nproc_per_node G --rdzv_backend c10d --rdzv_endpoint HOST:PORT
    -m lavis_ib.train ...` on every node; the output directory must be on a filesystem all
    nodes share (checkpoints are written collectively).

    Raises:
        ConfigError: `ddp`/`fsdp` outside torchrun, or `none` under a multi-process torchrun.
    """
    mode = run.distributed
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = resolve_device(run.device, local_rank, key="run.device")
    if mode == "none":
        if world > 1:
            raise ConfigError(f"run.distributed is 'none' but torchrun started {world} "
                              f"processes; set run.distributed=ddp or fsdp.")
        return DistInfo(device=device)
    if "RANK" not in os.environ:
        raise ConfigError(f"run.distributed={mode} needs torchrun: torchrun --standalone "
                          f"--nproc_per_node N -m lavis_ib.train ... (or set "
                          f"run.distributed=none).")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    created = False
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            timeout=datetime.timedelta(seconds=run.dist_timeout_s),
            device_id=device if device.type == "cuda" else None)
        created = True
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device, created)


def teardown_distributed(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def apply_activation_checkpointing(units: list[nn.Module]) -> int:
    """Recompute each unit's forward in the backward pass (keys and modules unchanged).
    `run.activation_checkpointing` applies it (non-reentrant) to `model.checkpoint_units()`."""
    from torch.utils.checkpoint import checkpoint

    for unit in units:
        original = unit.forward

        @functools.wraps(original)
        def forward(*args: Any, _orig: Any = original, **kwargs: Any) -> Any:
            if not torch.is_grad_enabled():
                return _orig(*args, **kwargs)
            return checkpoint(_orig, *args, use_reentrant=False, **kwargs)
        unit.forward = forward
    return len(units)


def _own_params(module: nn.Module, taken: set[int]) -> list[nn.Parameter]:
    return [p for p in module.parameters() if id(p) not in taken]


def _param_owner_units(root: nn.Module, taken: set[int]) -> list[nn.Module]:
    """Every submodule of `root` that directly owns parameters not yet in a unit, children
    before parents, for a root whose leftover parameters mix dtypes (FSDP2 units must be
    uniform). Units this small are entered wherever the model calls them: a model may
    call a leftover submodule directly (the LLM adapter embeds ids with the LLM's
    `get_input_embeddings()`), which never runs a larger enclosing unit's forward hook."""
    units: list[nn.Module] = []
    seen: set[int] = set()

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if id(child) in seen:
                continue
            seen.add(id(child))
            visit(child)
            if any(id(p) not in taken for p in child.parameters(recurse=False)):
                units.append(child)
    visit(root)
    return units


class Strategy:
    """Wraps a model for one of `none | ddp | fsdp` and drives gradient synchronisation.

    - `none`: the model on its device.
    - `ddp`: DistributedDataParallel over the whole model (frozen parameters carry no grads).
    - `fsdp`: FSDP2 `fully_shard` on every `model.shard_units()` block, then (when the
      leftover parameters mix dtypes) on every submodule that directly owns leftover
      parameters, then on the root, with an explicit 1-D device mesh. Every unit
      holds one dtype (frozen bf16/fp16 blocks apart from the fp32 Q-Former; LoRA adapters
      on the LLM are units of their own nested in their bf16 block, as the model's
      `shard_units()` lists them first: FSDP2 refuses mixed dtypes in one unit). Units with
      trainable parameters get, with `amp: bf16`, `MixedPrecisionPolicy(param_dtype=bf16,
      reduce_dtype=fp32)`: fp32 master weights, bf16 compute, fp32 gradient reduction.
      Frozen units keep their stored dtype (an fp16 ViT is not recast to bf16). The model
      contract's inference methods, `generate` and `score_candidates`, are registered as
      FSDP forward methods.
    """

    def __init__(self, run: RunConfig, info: DistInfo) -> None:
        self.mode = run.distributed
        self.amp = run.amp
        self.activation_checkpointing = run.activation_checkpointing
        self.info = info
        self.mesh = None
        if self.mode == "fsdp" and self.amp == "fp16":
            raise ConfigError("run.amp=fp16 with run.distributed=fsdp is not supported (the "
                              "gradient scaler cannot see sharded gradients); use run.amp=bf16.")

    # -- wrapping -------------------------------------------------------------------
    def wrap(self, model: nn.Module) -> nn.Module:
        """The model ready for training: checkpointed, moved, wrapped or sharded."""
        if self.activation_checkpointing:
            units = list(model.checkpoint_units())
            if not units:
                raise ConfigError("run.activation_checkpointing is true but the model lists no "
                                  "checkpoint_units(); set it to false.")
            apply_activation_checkpointing(units)
        if self.mode == "none":
            return model.to(self.info.device)
        if self.mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP

            model.to(self.info.device)
            ids = [self.info.device.index] if self.info.device.type == "cuda" else None
            # find_unused_parameters: ablations leave trainable parts unused (e.g. no
            # instruction in the Q-Former); the Q-Former is small, the scan is cheap.
            return DDP(model, device_ids=ids, find_unused_parameters=True)
        return self._shard(model)

    def _shard(self, model: nn.Module) -> nn.Module:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import (MixedPrecisionPolicy, fully_shard,
                                            register_fsdp_forward_method)

        self.mesh = init_device_mesh(self.info.device.type, (self.info.world_size,))
        keep = MixedPrecisionPolicy()  # frozen units compute in their stored dtype
        train = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
                 if self.amp == "bf16" else keep)

        def shard(unit: nn.Module) -> None:
            own = _own_params(unit, taken)
            policy = train if any(p.requires_grad for p in own) else keep
            fully_shard(unit, mesh=self.mesh, mp_policy=policy)
            for name in UNIT_METHODS:
                if callable(getattr(unit, name, None)):
                    register_fsdp_forward_method(unit, name)
            taken.update(id(p) for p in unit.parameters())

        units = list(model.shard_units())
        taken: set[int] = set()
        for unit in units:
            self._check_uniform(unit, taken)
            shard(unit)
        if len({p.dtype for p in _own_params(model, taken)}) > 1:
            for unit in _param_owner_units(model, taken):
                self._check_uniform(unit, taken)
                shard(unit)
        self._check_uniform(model, taken)
        fully_shard(model, mesh=self.mesh, mp_policy=train)
        for name in FORWARD_METHODS:
            register_fsdp_forward_method(model, name)
        return model

    @staticmethod
    def _check_uniform(module: nn.Module, taken: set[int]) -> None:
        dtypes = {p.dtype for p in _own_params(module, taken)}
        if len(dtypes) > 1:
            names = sorted(str(d).replace("torch.", "") for d in dtypes)
            raise ConfigError(f"FSDP unit {type(module).__name__} mixes parameter dtypes "
                              f"{names}; every shard unit must hold one dtype (split it in "
                              f"model.shard_units()).")

    # -- training-time helpers --------------------------------------------------------
    @staticmethod
    def unwrap(model: nn.Module) -> nn.Module:
        """The user's model (DDP's `.module`; FSDP2 shards in place)."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        return model.module if isinstance(model, DDP) else model

    @contextlib.contextmanager
    def sync_gradients(self, model: nn.Module, sync: bool) -> Iterator[None]:
        """Reduce gradients only on the last micro-batch of an accumulation."""
        if self.mode == "ddp" and not sync:
            with model.no_sync():
                yield
        elif self.mode == "fsdp":
            model.set_requires_gradient_sync(sync)
            yield
        else:
            yield

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.info.world_size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    @contextlib.contextmanager
    def eval_mode(self, model: nn.Module) -> Iterator[nn.Module]:
        """The model for evaluation. Under FSDP every unit is gathered once and kept
        gathered, so ranks may run different numbers of forward calls (uneven shards,
        generation lengths) without collectives getting out of step."""
        inner = self.unwrap(model)
        was_training = inner.training
        inner.eval()
        fsdp_modules = []
        if self.mode == "fsdp":
            from torch.distributed.fsdp import FSDPModule

            fsdp_modules = [m for m in inner.modules() if isinstance(m, FSDPModule)]
            for m in fsdp_modules:
                m.set_reshard_after_forward(False, recurse=False)
            for m in fsdp_modules:
                m.unshard()
        try:
            with torch.no_grad():
                yield inner
        finally:
            for m in fsdp_modules:
                m.reshard()
                # inner units reshard after forward again; the root keeps its parameters
                # for the backward pass, as FSDP2 sets it up
                m.set_reshard_after_forward(m is not inner, recurse=False)
            inner.train(was_training)

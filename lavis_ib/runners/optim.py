"""The optimizer and gradient arithmetic of one optimizer step.

AdamW with LAVIS's decay groups, normalisation by the global token count so that any split
of a global batch over ranks and accumulation gives the same gradients, and clipping that
works on FSDP2's sharded gradients too. (The batching of a step is derived in batching.py.)"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from lavis_ib.common.errors import ConfigError

if TYPE_CHECKING:
    from lavis_ib.common.schema import RunConfig


def param_groups(named_params: Iterable[tuple[str, nn.Parameter]],
                 weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: decay for 2+ dimensions, none for the rest.

    Two groups as LAVIS: weight decay on parameters with 2+ dimensions (weights, query
    tokens), none on biases and norms.

    Args:
        named_params: (name, parameter) of the trainable parameters.
        weight_decay: decay of the first group.

    Returns:
        `[{"params", "weight_decay", "names"}, ...]`, empty groups left out.
    """
    decay, no_decay = [], []
    for name, param in named_params:
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 else no_decay).append((name, param))
    groups = []
    for members, wd in ((decay, weight_decay), (no_decay, 0.0)):
        if members:
            groups.append({"params": [p for _, p in members], "weight_decay": wd,
                           "names": [n for n, _ in members]})
    if not groups:
        raise ConfigError("the model has no trainable parameters: check which modules are "
                          "frozen (model.trainable_parameters()).")
    return groups


def build_optimizer(named_params: Iterable[tuple[str, nn.Parameter]],
                    run: RunConfig) -> torch.optim.AdamW:
    """AdamW(betas=(0.9, run.beta2)) with LAVIS's decay groups; the LR is set by the
    scheduler. `run` is the typed RunConfig."""
    groups = [{k: v for k, v in g.items() if k != "names"}
              for g in param_groups(named_params, run.weight_decay)]
    return torch.optim.AdamW(groups, lr=run.init_lr, betas=(0.9, run.beta2),
                             weight_decay=run.weight_decay)


def grads(params: Iterable[nn.Parameter]) -> list[torch.Tensor]:
    return [p.grad for p in params if p.grad is not None]


@torch.no_grad()
def rescale_grads(params: Iterable[nn.Parameter], factor: float) -> None:
    """Multiply every gradient by `factor` (world_size / global token count).

    Global-token-count normalisation: every micro-batch back-propagates its summed token
    loss, and before clipping the gradients are multiplied by world_size / (tokens of the
    whole step over all ranks). DDP and FSDP average gradients over ranks, so the result is
    sum(token losses) / tokens whatever the split of the global batch.
    """
    for grad in grads(params):
        grad.mul_(factor)


@torch.no_grad()
def grad_norm(params: list[nn.Parameter]) -> float:
    """The total gradient norm over all shards (not clipped): the runner checks it is
    finite before anything steps."""
    gs = grads(params)
    if not gs:
        return 0.0
    total = torch.nn.utils.get_total_norm(gs, norm_type=2.0)
    if isinstance(total, DTensor):  # FSDP2: the norm of sharded gradients is a partial sum
        total = total.full_tensor()
    return float(total)


def clip_to(params: list[nn.Parameter], max_norm: float | None, total: float) -> None:
    """Clip gradients whose total norm is `total` to `max_norm` (None or <= 0: no clip)."""
    if max_norm is not None and max_norm > 0 and grads(params):
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, torch.tensor(total))


def clip_grads(params: list[nn.Parameter], max_norm: float | None) -> float:
    """The total gradient norm (over all shards); clipped to `max_norm` when given.
    Works on plain tensors and on FSDP2's sharded DTensor gradients."""
    total = grad_norm(params)
    clip_to(params, max_norm, total)
    return total

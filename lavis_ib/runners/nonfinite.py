"""No NaN/inf gradient is applied and no non-finite weight is saved: the runner's guard.

An object of its own (`NonFiniteGuard`), not a runner mixin, so its rules are read and
tested apart from the step loop."""
from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import torch
from torch.distributed.tensor import DTensor

from lavis_ib.common.errors import LavisIbError
from lavis_ib.runners.optim import grad_norm
from lavis_ib.runners.run_log import RunLogger

logger = logging.getLogger(__name__)


class NonFiniteLossError(LavisIbError):
    """The training loss, gradients or weights became NaN or infinite; the run stopped
    without stepping or saving them."""


class NonFiniteGuard:
    """Checks of one training run's gradients and weights.

    A non-finite gradient norm (on any rank: one decision for all) skips the step without
    an optimizer or scheduler update, logged as an event; more than `max_skipped_steps` in
    a row, a non-finite loss or a non-finite weight stop the run with the last good
    checkpoint named in one line.

    Args:
        params: the trainable parameters (plain tensors or FSDP2 DTensors).
        strategy: the run's `Strategy` (its `all_reduce_sum` makes one decision for all).
        info: the run's `DistInfo`.
        max_skipped_steps: `run.max_skipped_steps`.
    """

    def __init__(self, params: Sequence[torch.nn.Parameter], strategy: Any, info: Any,
                 max_skipped_steps: int) -> None:
        self.params, self.strategy, self.info = list(params), strategy, info
        self.max_skipped_steps = max_skipped_steps
        self.in_a_row = 0   # steps skipped since the last applied one

    def global_grad_norm(self) -> float:
        """The global gradient norm, made one decision for all ranks: a non-finite norm
        on any rank is non-finite on every rank."""
        norm = grad_norm(self.params)
        if self.info.world_size > 1:
            flag = torch.tensor([0.0 if math.isfinite(norm) else 1.0], device=self.info.device)
            if self.strategy.all_reduce_sum(flag).item() > 0:
                return float("inf") if math.isfinite(norm) else norm
        return norm

    def stepped(self) -> None:
        """A step was applied: the count of skipped steps in a row starts again."""
        self.in_a_row = 0

    def skip_step(self, step: int, norm: float, optimizer: Any, scaler: Any, log: RunLogger,
                  last_checkpoint: str | None) -> None:
        """Drop the gradients of step `step` (1-based; no optimizer or scheduler update)
        and log it; stop after more than `max_skipped_steps` in a row."""
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.update()  # fp16: the scaler lowers its scale, as it would itself
        self.in_a_row += 1
        log.event(event="skipped_step", step=step, grad_norm=str(norm), in_a_row=self.in_a_row)
        logger.warning("step %d: gradient norm %s, step skipped (%d in a row)", step, norm,
                       self.in_a_row)
        if self.in_a_row > self.max_skipped_steps:
            self.stop(f"the gradient norm was not finite in {self.in_a_row} steps in a row "
                      f"(run.max_skipped_steps={self.max_skipped_steps})", step, log,
                      last_checkpoint, "non_finite_grad")

    def stop(self, what: str, step: int, log: RunLogger, last_checkpoint: str | None,
             event: str = "non_finite_loss") -> None:
        """Log `event` and raise NonFiniteLossError naming the last good checkpoint (one
        written or resumed by this run: finite weights)."""
        log.event(event=event, step=step, what=what, checkpoint=last_checkpoint)
        raise NonFiniteLossError(
            f"{what} at step {step}; stopped before the optimizer step. Last good "
            f"checkpoint: {last_checkpoint or 'none (no checkpoint written yet)'}; continue "
            f"with run.resume=auto after lowering run.init_lr, setting run.grad_clip or "
            f"using run.amp=bf16.")

    def weights_finite(self) -> bool:
        """Whether every trainable weight is finite on every rank."""
        local = all(bool(torch.isfinite(p.to_local() if isinstance(p, DTensor) else p).all())
                    for p in self.params)
        flag = torch.tensor([0.0 if local else 1.0], device=self.info.device)
        return self.strategy.all_reduce_sum(flag).item() == 0

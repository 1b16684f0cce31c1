"""Learning-rate schedulers, stepped once per optimizer step (LAVIS's names).

LAVIS steps its cosine per epoch and assumes warm-up fits in the first epoch; here every
schedule is a closed-form function of the optimizer step, `lr_at(step)`, so resuming at
any step gives exactly the LR an uninterrupted run would use. `step(cur_step)` writes
`lr_at(cur_step)` into every parameter group before optimizer step `cur_step` (0-based).

Closed forms (s = step, W = warmup_steps, T = max_iters):
    warm-up (s < W):  warmup_lr + (init_lr - warmup_lr) * s / W
    cosine  (s >= W): min_lr + (init_lr - min_lr) * (1 + cos(pi * (s - W) / (T - W))) / 2
    step    (s >= W): max(min_lr, init_lr * lr_decay_rate ** ((s - W) // lr_decay_every))
    constant(s >= W): init_lr
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping

from lavis_ib.common.errors import ConfigError
from lavis_ib.common.registry import registry

if TYPE_CHECKING:
    from lavis_ib.common.schema import RunConfig


class _WarmupScheduler:
    """Linear warm-up from `warmup_lr` to `init_lr` over `warmup_steps`, then `_after`.

    Args:
        optimizer: a torch optimizer; every parameter group gets the same LR.
        max_iters: total optimizer steps of the run.
        init_lr: the LR reached at the end of warm-up.
        min_lr: the floor (cosine: the LR at `max_iters`).
        warmup_lr: the LR at step 0; a negative value means `init_lr` (no warm-up).
        warmup_steps: steps of linear warm-up.
    """

    def __init__(self, optimizer: Any, max_iters: int, init_lr: float, min_lr: float = 0.0,
                 warmup_lr: float = -1.0, warmup_steps: int = 0, **_: Any) -> None:
        if max_iters <= 0:
            raise ConfigError(f"run.max_iters must be positive, got {max_iters}.")
        if warmup_steps < 0:
            raise ConfigError(f"run.warmup_steps must be >= 0, got {warmup_steps}.")
        self.optimizer = optimizer
        self.max_iters = int(max_iters)
        self.init_lr = float(init_lr)
        self.min_lr = float(min_lr)
        self.warmup_lr = float(init_lr if warmup_lr is None or warmup_lr < 0 else warmup_lr)
        self.warmup_steps = int(warmup_steps)
        self.last_step = -1

    @classmethod
    def from_config(cls, optimizer: Any, run: RunConfig) -> "_WarmupScheduler":
        """Build from the typed `run` config (common/schema.py's RunConfig)."""
        return cls(optimizer, max_iters=run.max_iters, init_lr=run.init_lr, min_lr=run.min_lr,
                   warmup_lr=run.warmup_lr, warmup_steps=run.warmup_steps,
                   lr_decay_rate=run.lr_decay_rate, lr_decay_every=run.lr_decay_every)

    def lr_at(self, step: int) -> float:
        """The LR of optimizer step `step` (0-based)."""
        if step < self.warmup_steps:
            return self.warmup_lr + (self.init_lr - self.warmup_lr) * step / self.warmup_steps
        return self._after(step)

    def _after(self, step: int) -> float:
        """The LR of a step past the warm-up (each schedule defines its decay)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _after(step)")

    def step(self, cur_step: int) -> float:
        """Set the LR of step `cur_step` in every parameter group; returns it."""
        lr = self.lr_at(cur_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.last_step = cur_step
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.last_step = int(state["last_step"])
        if self.last_step >= 0:
            self.step(self.last_step)


@registry.register_lr_scheduler("linear_warmup_cosine_lr")
class LinearWarmupCosineLRScheduler(_WarmupScheduler):
    """Warm-up, then per-step cosine decay from `init_lr` to `min_lr` at `max_iters`."""

    def _after(self, step: int) -> float:
        span = max(self.max_iters - self.warmup_steps, 1)
        progress = min(step - self.warmup_steps, span) / span
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr + (self.init_lr - self.min_lr) * cosine


@registry.register_lr_scheduler("linear_warmup_step_lr")
class LinearWarmupStepLRScheduler(_WarmupScheduler):
    """Warm-up, then `init_lr` x `lr_decay_rate` every `lr_decay_every` steps, floored at
    `min_lr`."""

    def __init__(self, optimizer: Any, max_iters: int, init_lr: float, min_lr: float = 0.0,
                 warmup_lr: float = -1.0, warmup_steps: int = 0, lr_decay_rate: float = 0.9,
                 lr_decay_every: int = 1000, **_: Any) -> None:
        super().__init__(optimizer, max_iters, init_lr, min_lr, warmup_lr, warmup_steps)
        if lr_decay_every <= 0:
            raise ConfigError(f"run.lr_decay_every must be positive, got {lr_decay_every}.")
        self.lr_decay_rate = float(lr_decay_rate)
        self.lr_decay_every = int(lr_decay_every)

    def _after(self, step: int) -> float:
        decays = (step - self.warmup_steps) // self.lr_decay_every
        return max(self.min_lr, self.init_lr * self.lr_decay_rate ** decays)


@registry.register_lr_scheduler("constant_lr")
class ConstantLRScheduler(_WarmupScheduler):
    """Warm-up, then `init_lr`."""

    def _after(self, step: int) -> float:
        return self.init_lr

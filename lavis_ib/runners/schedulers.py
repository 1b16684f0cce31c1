"""Learning-rate schedulers, stepped once per optimizer step (LAVIS's names).

LAVIS steps its cosine per epoch and assumes warm-up fits in the first epoch; here every
schedule is a closed-form function of the optimizer step (`lr_at`), so resuming at any step
gives exactly the LR an uninterrupted run would use (the forms: `_WarmupScheduler`)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping

from lavis_ib.common.errors import ConfigError
from lavis_ib.common.registry import registry

if TYPE_CHECKING:
    from lavis_ib.common.schema import RunConfig


class _WarmupScheduler:
    """Linear warm-up from `warmup_lr` to `init_lr` over `warmup_steps`, then `_after`.

    `step(cur_step)` writes `lr_at(cur_step)` into every parameter group before optimizer
    step `cur_step` (0-based). Closed forms (s = step, W = warmup_steps, T = max_iters):

        warm-up (s < W):  warmup_lr + (init_lr - warmup_lr) * s / W
        cosine  (s >= W): min_lr + (init_lr - min_lr) * (1 + cos(pi * (s - W) / (T - W))) / 2
        step    (s >= W): max(min_lr, init_lr * lr_decay_rate ** ((s - W) // lr_decay_every))
        constant(s >= W): init_lr

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
        self.continued: tuple[int, float] | None = None   # (resume step R, LR L there)

    @classmethod
    def from_config(cls, optimizer: Any, run: RunConfig) -> "_WarmupScheduler":
        """Build from the typed `run` config (common/schema.py's RunConfig)."""
        return cls(optimizer, max_iters=run.max_iters, init_lr=run.init_lr, min_lr=run.min_lr,
                   warmup_lr=run.warmup_lr, warmup_steps=run.warmup_steps,
                   lr_decay_rate=run.lr_decay_rate, lr_decay_every=run.lr_decay_every)

    def lr_at(self, step: int) -> float:
        """The LR of optimizer step `step` (0-based)."""
        if self.continued is not None and step >= self.continued[0]:
            return self._continued(step, *self.continued)
        if step < self.warmup_steps:
            return self.warmup_lr + (self.init_lr - self.warmup_lr) * step / self.warmup_steps
        return self._after(step)

    def _after(self, step: int) -> float:
        """The LR of a step past the warm-up (each schedule defines its decay)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _after(step)")

    def _continued(self, step: int, start: int, lr: float) -> float:
        """The LR of a step of a continued schedule (from `lr` at step `start`)."""
        raise ConfigError(f"{type(self).__name__} cannot continue a changed schedule; resume "
                          f"with the checkpoint's schedule settings.")

    def continue_from(self, step: int, lr: float) -> str:
        """Continue the schedule from `lr` at `step` (no warm-up) to this schedule's end;
        returns a sentence saying so, for the log.

        For a resume that changes the schedule (`run.max_iters`, warm-up, `min_lr`, ...;
        accepted only with `run.allow_config_change`): the schedule continues instead of
        re-planning, from the LR L the run had at the resume step R, with no second warm-up
        (kept in the scheduler's state so later resumes keep it):

            cosine  (s >= R): min_lr + (L - min_lr) * (1 + cos(pi * (s - R) / (T - R))) / 2
            step    (s >= R): max(min_lr, L * lr_decay_rate ** ((s - R) // lr_decay_every))
            constant(s >= R): L
        """
        self.continued = (int(step), float(lr))
        self.lr_at(step)   # a schedule that cannot continue says so now
        end = self.lr_at(self.max_iters)
        return (f"the LR continues from {lr:.3g} at step {step} to {end:.3g} at step "
                f"{self.max_iters} ({self.continuation}, no warm-up)")

    continuation = "its own shape"

    def step(self, cur_step: int) -> float:
        """Set the LR of step `cur_step` in every parameter group; returns it."""
        lr = self.lr_at(cur_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.last_step = cur_step
        return lr

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"last_step": self.last_step}
        if self.continued is not None:
            state["continued_from"] = list(self.continued)
        return state

    def restore(self, state: Mapping[str, Any]) -> None:
        """The state of `state_dict`, without touching the optimizer."""
        self.last_step = int(state["last_step"])
        start = state.get("continued_from")
        self.continued = (int(start[0]), float(start[1])) if start else None

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.restore(state)
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

    continuation = "cosine to run.min_lr"

    def _continued(self, step: int, start: int, lr: float) -> float:
        span = max(self.max_iters - start, 1)
        progress = min(step - start, span) / span
        return self.min_lr + (lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


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

    continuation = "run.lr_decay_rate every run.lr_decay_every steps, floored at run.min_lr"

    def _continued(self, step: int, start: int, lr: float) -> float:
        return max(self.min_lr, lr * self.lr_decay_rate ** ((step - start) // self.lr_decay_every))


@registry.register_lr_scheduler("constant_lr")
class ConstantLRScheduler(_WarmupScheduler):
    """Warm-up, then `init_lr`."""

    def _after(self, step: int) -> float:
        return self.init_lr

    continuation = "constant"

    def _continued(self, step: int, start: int, lr: float) -> float:
        return lr


class _Recorded:
    """A run config seen through the schedule settings a checkpoint recorded."""

    def __init__(self, run: Any, recorded: Mapping[str, Any]) -> None:
        self._run, self._recorded = run, recorded

    def __getattr__(self, key: str) -> Any:
        return self._recorded[key] if key in self._recorded else getattr(self._run, key)


def continue_changed_schedule(scheduler: _WarmupScheduler, run: RunConfig,
                              recorded: Mapping[str, Any], state: Mapping[str, Any],
                              step: int) -> str:
    """Continue `scheduler` (built from the changed settings of `run`) from the LR that the
    checkpointed run had at `step`: its schedule is rebuilt from the settings it
    `recorded` (lr_sched, init_lr, max_iters, ...) and its scheduler `state` (an earlier
    continuation included). Returns the sentence for the log."""
    old_cls = registry.get_lr_scheduler_class(str(recorded.get("lr_sched", run.lr_sched)))
    old = old_cls.from_config(None, _Recorded(run, recorded))
    old.restore(state)
    return scheduler.continue_from(step, old.lr_at(step))

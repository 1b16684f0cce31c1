"""Parts of the iteration runner kept apart to keep runner_iter.py readable: the run
folder's claim and resume (`RunFolderMixin`) and the non-finite guards of a training step
(`NonFiniteGuardMixin`). Both read the runner's attributes (`run`, `info`, `ckpt`, ...)
set in `RunnerIter._setup_training`.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import sys
from typing import Any

import torch
from torch.distributed.tensor import DTensor

from lavis_ib.common.errors import LavisIbError
from lavis_ib.runners.checkpointing.manager import check_verified, resolve_checkpoint
from lavis_ib.runners.checkpointing.files import write_json_atomic
from lavis_ib.runners.optim import grad_norm
from lavis_ib.runners.run_folder import check_config_change, claim_output_dir, rank0_decides
from lavis_ib.runners.run_log import RunLogger

logger = logging.getLogger(__name__)


class NonFiniteLossError(LavisIbError):
    """The training loss, gradients or weights became NaN or infinite; the run stopped
    without stepping or saving them."""


class RunFolderMixin:
    """Claiming, resuming and recording a run folder."""

    def _claim(self) -> None:
        """Rank 0: lock the output folder; a new run also makes the folder its own."""
        self.lock.acquire()
        if self.run.resume == "none":
            try:
                claim_output_dir(self.output_dir, self.run.overwrite)
            except BaseException:
                self.lock.release()
                raise

    def _resume_settings(self) -> dict[str, Any]:
        """The settings a resume must keep (recorded in each checkpoint's meta.json)."""
        return {"global_batch_size": self.global_bs, "init_lr": float(self.run.init_lr),
                "datasets": sorted(self._train_sets()[0])}

    def _resume(self) -> None:
        choice = self.run.resume
        if choice == "none":
            return
        def pick() -> str | None:  # rank 0 reads the checksums once for every rank
            path = self.ckpt.latest() if choice == "auto" else resolve_checkpoint(choice)
            if path is not None:
                check_verified(path)
            return path

        path = rank0_decides(self.info.rank, pick)
        if path is None:
            logger.info("run.resume=auto: no checkpoint in %s, starting at step 0", self.output_dir)
            return
        state = self.ckpt.load(path, self.model, self.inner, self.optimizer, verified=True)
        trainer = state["trainer"]
        check_config_change(path, trainer["meta"], self._resume_settings(),
                            self.run.allow_config_change)
        self.step = int(trainer["step"])
        self.scheduler.load_state_dict(trainer["scheduler"])
        if self.scaler is not None and trainer.get("scaler"):
            self.scaler.load_state_dict(trainer["scaler"])
        self.best = trainer.get("best", self.best)
        self.loader.load_state_dict(state["loader"])
        if trainer.get("validated") is False:  # killed between checkpoint and validation
            self._pending_validation = path
        self._resumed_from = path
        logger.info("resumed from %s at step %d", path, self.step)

    def _save_run_files(self, folder: str, keep: bool) -> None:
        """config.yaml and run_info.json of `folder`, each written atomically; with `keep`
        (a resumed run) existing ones are kept: they record the run being continued."""
        from lavis_ib import __version__

        if keep and os.path.exists(os.path.join(folder, "run_info.json")):
            return
        self.cfg.save(folder)
        versions = {"lavis_ib": __version__, "torch": torch.__version__,
                    "python": sys.version.split()[0], "world_size": self.info.world_size}
        if self.global_bs is not None:  # training runs: the batching derived for this world
            versions.update(global_batch_size=self.global_bs, micro_batch_size=self.micro_bs,
                            accum_steps=self.accum)
        write_json_atomic(os.path.join(folder, "run_info.json"), versions)

    def _evaluation_folder(self, name: str) -> str:
        """Where an evaluation writes: `run.output_dir` itself, or `<output_dir>/eval/<name>/`
        when that is a training run's folder (whose records it must not touch)."""
        if os.path.isdir(os.path.join(self.output_dir, "checkpoints")):
            return os.path.join(self.output_dir, "eval", name)
        return self.output_dir

    def _fingerprint(self, checkpoint: str | None) -> str:
        """What an evaluation computes: the composed config and the checkpoint's meta."""
        from omegaconf import OmegaConf

        text = OmegaConf.to_yaml(self.cfg.config)
        if checkpoint:
            with open(os.path.join(checkpoint, "meta.json")) as f:
                text += checkpoint + f.read()
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class NonFiniteGuardMixin:
    """No NaN/inf gradient is applied and no non-finite weight is saved."""

    def _global_grad_norm(self) -> float:
        """The global gradient norm, made one decision for all ranks: a non-finite norm
        on any rank is non-finite on every rank."""
        norm = grad_norm(self.params)
        if self.info.world_size > 1:
            flag = torch.tensor([0.0 if math.isfinite(norm) else 1.0], device=self.info.device)
            if self.strategy.all_reduce_sum(flag).item() > 0:
                return float("inf") if math.isfinite(norm) else norm
        return norm

    def _skip_step(self, norm: float, log: RunLogger) -> None:
        """Drop this step's gradients (no optimizer or scheduler update) and log it; stop
        after more than `max_skipped_steps` in a row."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.update()  # fp16: the scaler lowers its scale, as it would itself
        self.skipped += 1
        log.event(event="skipped_step", step=self.step + 1, grad_norm=str(norm),
                  in_a_row=self.skipped)
        logger.warning("step %d: gradient norm %s, step skipped (%d in a row)", self.step + 1,
                       norm, self.skipped)
        if self.skipped > self.run.max_skipped_steps:
            self._stop_non_finite(f"the gradient norm was not finite in {self.skipped} steps "
                                  f"in a row (run.max_skipped_steps={self.run.max_skipped_steps})",
                                  log, "non_finite_grad")

    def _stop_non_finite(self, what: str, log: RunLogger, event: str = "non_finite_loss") -> None:
        last = self.last_checkpoint  # written or resumed by this run: finite weights
        log.event(event=event, step=self.step + 1, what=what, checkpoint=last)
        raise NonFiniteLossError(
            f"{what} at step {self.step + 1}; stopped before the optimizer step. Last good "
            f"checkpoint: {last or 'none (no checkpoint written yet)'}; continue with "
            f"run.resume=auto after lowering run.init_lr, setting run.grad_clip or using "
            f"run.amp=bf16.")

    def _weights_finite(self) -> bool:
        """Whether every trainable weight is finite on every rank."""
        local = all(bool(torch.isfinite(p.to_local() if isinstance(p, DTensor) else p).all())
                    for p in self.params)
        flag = torch.tensor([0.0 if local else 1.0], device=self.info.device)
        return self.strategy.all_reduce_sum(flag).item() == 0

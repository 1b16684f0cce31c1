"""Progress and logs of a run (rank 0 only): a tqdm bar (loss, lr, samples/s, ETA),
JSON lines in `<output_dir>/log.jsonl` and TensorBoard events in `<output_dir>/tb/`.

Each JSON line is one record: `{"type": "train", "step", "loss", "lr", "grad_norm",
"tokens", "samples_per_s", "time"}` every `run.log_every` steps, `{"type": "val", "step",
"score", "metrics": {...}}` after validation, and `{"type": "event", ...}` for
checkpoints and stops.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from typing import Any

logger = logging.getLogger(__name__)


class RunLogger:
    """Writes progress of rank 0; other ranks get a logger that does nothing.

    Args:
        output_dir: the run folder.
        max_iters: total steps (for the bar's ETA).
        start_step: the first step of this process (after a resume).
        enabled: False on ranks other than 0.
        tensorboard: also write TensorBoard events.
    """

    def __init__(self, output_dir: str, max_iters: int, start_step: int = 0,
                 enabled: bool = True, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.bar = None
        self.tb = None
        self._file = None
        if not enabled:
            return
        os.makedirs(output_dir, exist_ok=True)
        self._file = open(os.path.join(output_dir, "log.jsonl"), "a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(os.path.join(output_dir, "tb"))
            except ImportError as exc:  # tensorboard is a dependency; keep training if absent
                logger.warning("TensorBoard disabled: %s", exc)
        from tqdm.auto import tqdm

        self.bar = tqdm(total=max_iters, initial=start_step, desc="train", unit="step",
                        dynamic_ncols=True, file=sys.stderr,
                        disable=os.environ.get("LAVIS_IB_NO_PROGRESS") == "1")
        self._last_time = time.perf_counter()
        self._samples = 0

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps({**record, "time": round(time.time(), 3)}) + "\n")
        self._file.flush()

    def step(self, step: int, loss: float, lr: float, grad_norm: float, samples: int,
             tokens: int, log: bool) -> None:
        """Advance the bar by one step; write a record when `log`."""
        if not self.enabled:
            return
        self._samples += samples
        self.bar.update(1)
        if not log:
            return
        now = time.perf_counter()
        rate = self._samples / max(now - self._last_time, 1e-9)
        self._last_time, self._samples = now, 0
        self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", samples_s=f"{rate:.1f}")
        self.write({"type": "train", "step": step, "loss": loss, "lr": lr,
                    "grad_norm": grad_norm if math.isfinite(grad_norm) else str(grad_norm),
                    "tokens": tokens, "samples_per_s": round(rate, 3)})
        if self.tb is not None:
            for key, value in (("loss", loss), ("lr", lr), ("grad_norm", grad_norm),
                               ("samples_per_s", rate)):
                self.tb.add_scalar(f"train/{key}", value, step)

    def validation(self, step: int, results: dict[str, dict[str, float]],
                   score: float | None) -> None:
        if not self.enabled:
            return
        self.write({"type": "val", "step": step, "score": score, "metrics": results})
        if self.tb is not None:
            for name, metrics in results.items():
                for key, value in metrics.items():
                    if isinstance(value, (int, float)):
                        self.tb.add_scalar(f"val/{name}/{key}", value, step)
            if score is not None:
                self.tb.add_scalar("val/select_score", score, step)
        self.bar.write(f"step {step}: validation score {score}")

    def reset_rate(self) -> None:
        """Restart the samples/s clock (after validation or a checkpoint, which are not
        training throughput)."""
        self._last_time, self._samples = time.perf_counter(), 0

    def event(self, **fields: Any) -> None:
        self.write({"type": "event", **fields})

    def close(self) -> None:
        if not self.enabled:
            return
        self.bar.close()
        if self.tb is not None:
            self.tb.close()
        self._file.close()

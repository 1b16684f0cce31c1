"""Fault hooks for tests (environment variables, off when unset): they make a run fail
the way a killed process or a full disk does, at a chosen step. The variables are listed
below `FAULT_EXIT_CODE` (and in docs/reliability.md)."""
from __future__ import annotations

import errno
import logging
import os
import signal
from typing import Any

from torch.distributed.checkpoint import FileSystemWriter

logger = logging.getLogger(__name__)
FAULT_EXIT_CODE = 13
# The fault variables (each names the step k it acts at):
#     LAVIS_IB_FAULT_AFTER_STEP=k       the process exits (code 13) after step k is done
#     LAVIS_IB_FAULT_IN_CHECKPOINT=k    the process exits while writing the step-k checkpoint
#     LAVIS_IB_FAULT_BEFORE_VALIDATION=k  exits after the step-k checkpoint, before validating
#                                       it (the resumed run validates it first)
#     LAVIS_IB_FAULT_DISK_FULL=k        the DCP writer of the step-k checkpoint fails with
#                                       ENOSPC after its first file, as a full disk does
#     LAVIS_IB_FAULT_SIGNAL_AFTER_STEP=k[:SIGUSR1][@r]  the process (of rank r) signals itself


def maybe_fault(variable: str, step: int) -> None:
    """Exit the process at once (no cleanup) when the fault variable names this step."""
    value = os.environ.get(variable)
    if value is not None and value.strip() and int(value) == step:
        logger.error("fault injection: %s=%s, exiting", variable, value)
        os._exit(FAULT_EXIT_CODE)


class _FullDiskWriter(FileSystemWriter):
    """Fault hook: writes normally, then fails like a disk that filled up mid-write."""

    def write_data(self, plan: Any, planner: Any) -> Any:
        super().write_data(plan, planner).wait()
        raise OSError(errno.ENOSPC, "No space left on device (LAVIS_IB_FAULT_DISK_FULL)")


def disk_full_writer(path: str, step: int) -> FileSystemWriter:
    value = os.environ.get("LAVIS_IB_FAULT_DISK_FULL", "").strip()
    return (_FullDiskWriter if value and int(value) == step else FileSystemWriter)(path)


def maybe_signal(step: int) -> None:
    """LAVIS_IB_FAULT_SIGNAL_AFTER_STEP=k[:NAME][@RANK]: this process sends itself SIGTERM
    (or signal NAME, e.g. SIGUSR1) after step k, as a cluster does before preempting a
    job; with @RANK only that rank does (the others learn it from the step's all-reduce)."""
    value = os.environ.get("LAVIS_IB_FAULT_SIGNAL_AFTER_STEP", "").strip()
    if not value:
        return
    value, _, rank = value.partition("@")
    at, _, name = value.partition(":")
    if int(at) == step and (not rank or int(rank) == int(os.environ.get("RANK", "0"))):
        logger.warning("fault injection: sending %s after step %d", name or "SIGTERM", step)
        os.kill(os.getpid(), getattr(signal, name or "SIGTERM"))

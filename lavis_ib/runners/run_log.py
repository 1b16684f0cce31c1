"""Progress and logs of a run (rank 0 only): a tqdm bar (loss, lr, samples/s, ETA),
JSON lines in `<output_dir>/log.jsonl` (always), and the loggers named in `run.loggers`.

One writer for every destination, so log.jsonl, TensorBoard and wandb get the same numbers
at the same steps, each step once even across a kill (`RunLogger`, `start_wandb`)."""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Any, Mapping, Sequence

from lavis_ib.common.durable_files import JsonlAppender, read_jsonl, rewrite_jsonl
from lavis_ib.common.errors import LavisIbError
from lavis_ib.common.metrics_text import format_value
from lavis_ib.common.schema import LOGGERS

logger = logging.getLogger(__name__)
WANDB_INIT_TIMEOUT_S = 20.0
WANDB_PROJECT = "lavis_ib"   # default project; $WANDB_PROJECT chooses another


class RunLogger:
    """Writes progress of rank 0; other ranks get a logger that does nothing.

    Each JSON line of `log.jsonl` is one record: `{"type": "train", "step", "loss", "lr",
    "grad_norm", "tokens", "samples_per_s", "time"}` (plus the model's named loss parts,
    e.g. `loss_itc`, each a mean weighted like `loss`) every `run.log_every` steps,
    `{"type": "val", "step", "score", "metrics": {...}}` after validation, and
    `{"type": "event", ...}` for checkpoints, stops and the wandb run started. The loggers
    get the same scalars (`train/<key>`, `val/<dataset>/<metric>`, `val/select_score`) at
    the same steps: `tensorboard` (events in `<output_dir>/tb/`, the default) and `wandb`.

    One record per step, also after a kill: a process that starts at step S (a resume, or
    0) first drops the records of steps after S that the stopped process wrote (log.jsonl
    is rewritten atomically, the count is an event) and opens TensorBoard with
    `purge_step=S+1`, so each step is written and shown once.

    Args:
        output_dir: the run folder.
        max_iters: total steps (for the bar's ETA).
        start_step: the first step of this process (after a resume).
        enabled: False on ranks other than 0.
        loggers: `run.loggers`, a subset of LOGGERS (log.jsonl is always written).
        config: the run's composed config, recorded by wandb.
        revalidate: the checkpoint of `start_step` is validated again (the stopped
            process may have died during its validation): its validation records go too.
    """

    def __init__(self, output_dir: str, max_iters: int, start_step: int = 0,
                 enabled: bool = True, loggers: Sequence[str] = ("tensorboard",),
                 config: Mapping[str, Any] | None = None, revalidate: bool = False) -> None:
        self.enabled = enabled
        self.bar = None
        self.tb = None
        self.wandb = None
        self._file = None
        unknown = sorted(set(loggers) - set(LOGGERS))
        if unknown:  # pre-flight checks run.loggers; this guards direct use
            raise LavisIbError(f"run.loggers: unknown {unknown}; choose from {', '.join(LOGGERS)}.")
        if not enabled:
            return
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, "log.jsonl")
        kept_train = _drop_records_after(path, start_step, revalidate)
        self._file = JsonlAppender(path)
        if "tensorboard" in loggers:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # events of steps >= purge_step (the stopped process's) are discarded
                purge = start_step if revalidate else start_step + 1
                _after_existing_event_files(os.path.join(output_dir, "tb"))
                self.tb = SummaryWriter(os.path.join(output_dir, "tb"), purge_step=purge)
                if revalidate and kept_train is not None:   # purged with the validation
                    self._tb_scalars(_train_scalars(kept_train), start_step)
            except ImportError as exc:  # tensorboard is a dependency; keep training if absent
                logger.warning("TensorBoard disabled: %s", exc)
                self.event(event="logger_disabled", logger="tensorboard", reason=str(exc))
        if "wandb" in loggers:
            try:
                self.wandb = start_wandb(output_dir, config or {}, self.event)
            except BaseException:
                if self.tb is not None:
                    self.tb.close()
                self._file.close()
                raise
        from tqdm.auto import tqdm

        self.bar = tqdm(total=max_iters, initial=start_step, desc="train", unit="step",
                        dynamic_ncols=True, file=sys.stderr,
                        disable=os.environ.get("LAVIS_IB_NO_PROGRESS") == "1")
        self._last_time = time.perf_counter()
        self._samples = 0

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._file.write([{**record, "time": round(time.time(), 3)}])

    def step(self, step: int, loss: float, lr: float, grad_norm: float, samples: int,
             tokens: int, log: bool, terms: Mapping[str, float] | None = None) -> None:
        """Advance the bar by one step; write a record when `log` (with `terms`, the
        model's loss parts, beside the loss)."""
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
        terms = dict(terms or {})
        record = {"type": "train", "step": step, "loss": loss, **terms, "lr": lr,
                  "grad_norm": grad_norm if math.isfinite(grad_norm) else str(grad_norm),
                  "tokens": tokens, "samples_per_s": round(rate, 3)}
        self.write(record)
        self._scalars({"train/loss": loss, "train/lr": lr, "train/grad_norm": grad_norm,
                       "train/samples_per_s": rate, "train/tokens": tokens,
                       **{f"train/{k}": v for k, v in terms.items()}}, step)

    def validation(self, step: int, results: dict[str, dict[str, float]],
                   score: float | None) -> None:
        if not self.enabled:
            return
        self.write({"type": "val", "step": step, "score": score, "metrics": results})
        scalars = {f"val/{name}/{key}": value for name, metrics in results.items()
                   for key, value in metrics.items()}
        if score is not None:
            scalars["val/select_score"] = score
        self._scalars(scalars, step)
        self.bar.write(f"step {step}: validation score {format_value(score)}")

    def _scalars(self, values: Mapping[str, Any], step: int) -> None:
        """The numbers among `values` to every logger of `run.loggers`."""
        numbers = {k: float(v) for k, v in values.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self._tb_scalars(numbers, step)
        if self.wandb is not None:
            self.wandb.log(numbers, step=step)

    def _tb_scalars(self, numbers: Mapping[str, float], step: int) -> None:
        if self.tb is not None:
            for key, value in numbers.items():
                self.tb.add_scalar(key, value, step)

    def reset_rate(self) -> None:
        """Restart the samples/s clock (after validation or a checkpoint, which are not
        training throughput)."""
        self._last_time, self._samples = time.perf_counter(), 0

    def event(self, **fields: Any) -> None:
        self.write({"type": "event", **fields})

    def flush(self) -> None:
        """Put TensorBoard's queued events on disk (at each checkpoint: a kill then loses
        only steps the resumed run writes again)."""
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        """Close the bar and every logger; called from the runner's `finally`, so a run
        that fails still finishes its wandb run (marked failed, exit code 1)."""
        if not self.enabled:
            return
        self.bar.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish(exit_code=0 if sys.exc_info()[0] is None else 1)
            self.wandb = None
        self._file.close()


def loss_terms(out: Mapping[str, Any]) -> list[str]:
    """The named loss parts of a model's training output (`loss_itc`, ...): its `loss_*`
    keys other than `loss_sum`, in the model's order (the same on every rank)."""
    return [k for k in out if k.startswith("loss_") and k != "loss_sum"]


def _after_existing_event_files(folder: str) -> None:
    """Wait until the clock is past the newest event file's second. TensorBoard reads a
    folder's event files in name order, whose first field is the creation time in whole
    seconds: a resumed writer created in the same second as the stopped process's could
    sort before it (the pid decides), and its `purge_step` would then be read first and
    purge nothing, hiding the resumed steps."""
    import glob

    stamps = []
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        field = os.path.basename(path).split(".")[3]
        if field.isdigit():
            stamps.append(int(field))
    if stamps:
        wait = max(stamps) + 1 - time.time()
        if wait > 0:
            time.sleep(wait)


def _train_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The logger scalars of a log.jsonl train record."""
    keys = ("loss", "lr", "grad_norm", "samples_per_s", "tokens", *loss_terms(record))
    return {f"train/{key}": record[key] for key in keys
            if isinstance(record.get(key), (int, float))}


def _drop_records_after(path: str, step: int, revalidate: bool) -> dict[str, Any] | None:
    """Drop from log.jsonl the records of steps after `step` (and, with `revalidate`, the
    validation of `step`): a stopped process wrote them past its last checkpoint, and the
    process starting at `step` writes them again. A torn last line goes too. Rewritten
    atomically only when something is dropped; the count is logged and kept as an event.
    Returns the kept train record of `step`, if any."""
    contents = read_jsonl(path)

    def later(record: Any) -> bool:
        at = record.get("step") if isinstance(record, dict) else None
        if not isinstance(at, int):
            return False   # process-level records (the wandb run) stay
        return at > step or (revalidate and at == step and (
            record.get("type") == "val" or record.get("event") == "best"))

    kept = [r for r in contents.records if not later(r)]
    dropped = len(contents.records) - len(kept)
    damaged = len(contents.bad) + (contents.torn is not None)
    if dropped or damaged:
        rewrite_jsonl(path, kept + [{"type": "event", "event": "log_truncated", "step": step,
                                     "dropped": dropped, "damaged_lines": damaged,
                                     "time": round(time.time(), 3)}])
        logger.info("%s: dropped %d record(s) of steps after %d and %d damaged line(s) left "
                    "by the stopped run (they are written again from step %d)", path,
                    dropped, step, damaged, step)
    return next((r for r in kept if isinstance(r, dict) and r.get("type") == "train"
                 and r.get("step") == step), None)


def _has_wandb_login() -> bool:
    """An API key in the environment or a wandb login in ~/.netrc (no network used)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def start_wandb(output_dir: str, config: Mapping[str, Any], event: Any) -> Any:
    """A wandb run for this process (rank 0), its files in `<output_dir>/wandb/`.

    wandb runs offline (files only, `wandb sync` uploads them later) when there is no API
    key (`WANDB_API_KEY` or a `~/.netrc` login) or when the server does not answer within
    `WANDB_INIT_TIMEOUT_S`; that fallback is a warning and an event in log.jsonl. A
    `WANDB_MODE` set by the user is kept as it is. Each process start (a resume too) is one
    wandb run, grouped under the run folder's name, so that steps never go back in one run.

    Raises:
        LavisIbError: wandb is not installed, or a user-set online `WANDB_MODE` fails.
    """
    try:
        import wandb
    except ImportError:
        raise LavisIbError("run.loggers has 'wandb' but wandb is not installed: "
                           "pip install 'lavis_ib[wandb]'.") from None
    from lavis_ib.common.containers import to_plain

    chosen = os.environ.get("WANDB_MODE")
    mode = chosen or ("online" if _has_wandb_login() else "offline")
    name = os.path.basename(os.path.abspath(output_dir))
    kwargs = dict(project=os.environ.get("WANDB_PROJECT", WANDB_PROJECT), dir=output_dir,
                  config=to_plain(config), name=name, group=name,
                  settings=wandb.Settings(silent=True, console="off",
                                          init_timeout=WANDB_INIT_TIMEOUT_S))
    try:
        run = wandb.init(mode=mode, **kwargs)
    except Exception as exc:  # wandb raises its own CommError/UsageError types
        if chosen or mode != "online":
            raise LavisIbError(f"wandb.init failed (WANDB_MODE={mode}): {exc}; set "
                               f"WANDB_MODE=offline to log to files only.") from None
        logger.warning("wandb: no answer from the server (%s); logging offline in %s "
                       "(upload later with `wandb sync`)", exc, os.path.join(output_dir, "wandb"))
        event(event="wandb_offline", reason=str(exc)[:300])
        mode, run = "offline", wandb.init(mode="offline", **kwargs)
    event(event="wandb", mode=mode, dir=run.dir, run_id=run.id)
    logger.info("wandb run %s (%s mode): %s", run.id, mode, run.dir)
    return run

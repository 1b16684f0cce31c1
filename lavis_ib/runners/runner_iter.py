"""`runner_iter`: the iteration-based runner (train with periodic validation; evaluate).

LAVIS's runner name and constructor, with a step loop that gives the same result on any
number of ranks, resumes exactly after a kill, and stops or skips rather than apply a
non-finite update (the step, validation and resume rules: `RunnerIter`)."""
from __future__ import annotations

import logging
import math
import os
from typing import Any, Mapping

import torch

from lavis_ib.common.errors import ConfigError, DataError
from lavis_ib.common.precision import autocast_dtype
from lavis_ib.common.registry import registry
from lavis_ib.common.seeding import seed_everything
from lavis_ib.models.token_counts import require_token_counts, training_token_counts
from lavis_ib.runners.checkpointing.manager import (CheckpointManager, maybe_fault,
                                         rng_state, set_rng_state)
from lavis_ib.common.durable_files import write_json_atomic
from lavis_ib.runners.batching import derive_batching
from lavis_ib.runners.checkpointing.faults import maybe_signal
from lavis_ib.runners.eval_resume import remove_partials
from lavis_ib.runners.eval_loop import evaluate_datasets, eval_splits, move_to, select_score
from lavis_ib.runners.nonfinite import NonFiniteGuard
from lavis_ib.runners.optim import build_optimizer, clip_to, rescale_grads
from lavis_ib.runners.run_folder import (SCHEDULE_KEYS, RunFolder, evaluation_fingerprint,
                                         resume_settings)
from lavis_ib.runners.run_log import RunLogger, loss_terms
from lavis_ib.runners.schedulers import continue_changed_schedule
from lavis_ib.runners.stop_signals import StopSignals
from lavis_ib.runners.strategies import DistInfo, Strategy, setup_distributed
from lavis_ib.runners.token_budget import TokenBudget

logger = logging.getLogger(__name__)


@registry.register_runner("runner_iter")
class RunnerIter:
    """Iteration runner (LAVIS's `RunnerIter` name and constructor).

    One optimizer step:

        lr = scheduler.step(step)                       closed form of the step (schedulers.py)
        for each of this rank's accum micro-batches     (MixtureLoader.next_step; with
                                                        run.max_tokens_per_micro_batch regrouped
                                                        by tokens, as many on every rank:
                                                        TokenBudget)
            task.train_step under autocast              the model's {"loss", "loss_sum", "num_tokens"}
            backward(loss_sum)                          gradients reduced on the last only
        all-reduce [loss_sum, tokens, samples, stop]    one collective per step
        stop if the loss is not finite                  nothing stepped, last checkpoint kept
        grads *= world_size / tokens                    global-token-count normalisation
        global grad norm not finite: skip the step      no optimizer/scheduler update, an event;
                                                        more than max_skipped_steps in a row stop
        clip; AdamW step; zero grads

    Every `val_every` steps (and at `max_iters`): checkpoint, validate the held-in
    validation splits through the shared evaluation loop, keep `best/` by
    `run.select_metric`. `save_every` adds checkpoints in between; the last step is always
    checkpointed. `resume: auto` continues from the newest checkpoint that verifies with the
    exact data order, RNG, optimizer and LR. SIGTERM/SIGUSR1 checkpoint at the next step
    boundary and end the run normally. The output folder is locked and claimed first
    (run_folder.py). Settings come from the typed `run` config (common/schema.py), read as
    attributes.

    Args:
        cfg: the composed `Config`.
        task: the training task (`run.task`).
        model: the built model (same weights on every rank).
        datasets: {name: {split: dataset}}.
        job_id: unused, kept for LAVIS's signature.
        dist_info: the process group setup; created from `run` when None.
    """

    def __init__(self, cfg: Any, task: Any, model: torch.nn.Module,
                 datasets: Mapping[str, Mapping[str, Any]], job_id: Any = None,
                 dist_info: DistInfo | None = None) -> None:
        self.cfg, self.task, self.datasets = cfg, task, datasets
        self.run = cfg.run_cfg  # the typed RunConfig (common/schema.py)
        self.datasets_cfg = cfg.datasets_cfg
        self.info = dist_info or setup_distributed(self.run)
        self.strategy = Strategy(self.run, self.info)
        self.inner = model
        self.model: torch.nn.Module | None = None
        self.output_dir = self.run.output_dir
        self.folder = RunFolder(self.run, self.info.rank)
        self.global_bs = self.micro_bs = self.accum = None  # set for training
        self.budget: TokenBudget | None = None  # run.max_tokens_per_micro_batch's splitter
        self.is_main = self.info.rank == 0

    # -- setup ------------------------------------------------------------------------
    def _train_sets(self) -> tuple[dict[str, Any], dict[str, float]]:
        sets, ratios = {}, {}
        for name, splits in self.datasets.items():
            split = next((s for s in self.run.train_splits if s in splits), None)
            if split is not None:
                sets[name] = splits[split]
                ratios[name] = float(self.datasets_cfg[name].get("sample_ratio", 1.0))
        if not sets:
            raise ConfigError(f"no dataset has a training split {list(self.run.train_splits)}; "
                              f"check datasets.<name>.build_info.annotations.")
        return sets, ratios

    def _validated(self) -> list[str]:
        """Datasets that training validation evaluates: a task and a split in
        `valid_splits` (and in the entry's `eval_splits` when set)."""
        valid = list(self.run.valid_splits)
        return [n for n, splits in self.datasets.items()
                if self.datasets_cfg[n].get("task")
                and [s for s in eval_splits(n, self.datasets_cfg[n], splits, valid) if s in valid]]

    def _check_select_metric(self) -> None:
        validated = self._validated()
        for item in self.run.select_metric:
            name = str(item).partition(".")[0]
            if name not in validated:
                raise ConfigError(
                    f"run.select_metric '{item}': dataset '{name}' is not validated in this "
                    f"project (it needs a task and a {list(self.run.valid_splits)} split not "
                    f"excluded by eval_splits); validated: {validated or '(none)'}.")

    def _setup_training(self) -> None:
        run, info = self.run, self.info
        self.global_bs, self.micro_bs, self.accum = derive_batching(run, info.world_size)
        if run.max_tokens_per_micro_batch is not None:
            require_token_counts(self.inner)
            self.budget = TokenBudget(run.max_tokens_per_micro_batch,
                                      lambda batch: training_token_counts(self.inner, batch),
                                      self._max_over_ranks, self.micro_bs)
        if run.val_every > 0:
            self._check_select_metric()
        self.model = self.strategy.wrap(self.inner)
        self.params = [p for _, p in self.inner.named_parameters() if p.requires_grad]
        self.guard = NonFiniteGuard(self.params, self.strategy, info, run.max_skipped_steps)
        self.optimizer = build_optimizer(self.inner.named_parameters(), run)
        scheduler_cls = registry.get_lr_scheduler_class(run.lr_sched)
        self.scheduler = scheduler_cls.from_config(self.optimizer, run)
        self.scaler = torch.amp.GradScaler(info.device.type) if run.amp == "fp16" else None
        from lavis_ib.datasets.loaders import MixtureLoader

        sets, ratios = self._train_sets()
        self.loader = MixtureLoader(sets, ratios, self.global_bs, self.micro_bs, info.rank,
                                    info.world_size, seed=run.seed, num_workers=run.num_workers,
                                    balanced=run.balanced_sampling,
                                    max_bad_sample_fraction=run.max_bad_sample_fraction,
                                    bad_sample_grace=run.bad_sample_grace,
                                    mix_unit=run.mix_unit, mix_group=run.batch_size_train,
                                    per_sample_dropout=run.per_sample_dropout)
        self.ckpt = CheckpointManager(self.output_dir, run.keep_last, info.rank, info.world_size)
        self.step, self.best = 0, {"score": None, "step": None}
        self._pending_validation = self._resumed_from = self._continued = None
        seed_everything(run.seed + info.rank)  # dropout/augmentation differ per rank
        self.folder.claim()
        try:
            self._resume()
            self.ckpt_step = self.step  # the newest checkpoint's step (a resume's)
            self.last_checkpoint = self._resumed_from
            if self.is_main:
                self._record(self.output_dir, keep=self.run.resume != "none")
        except BaseException:
            self.folder.release()
            raise

    def _resume_settings(self) -> dict[str, Any]:
        """The settings a resume must keep (recorded in each checkpoint's meta.json)."""
        return resume_settings(self.run, self.global_bs, self._train_sets()[1])

    def _resume(self) -> None:
        """Continue the checkpoint `run.resume` chooses: weights, optimizer, scheduler,
        data order and RNG; a changed schedule (accepted) continues from the LR there."""
        path = self.folder.checkpoint_to_resume()
        if path is None:
            return
        state = self.ckpt.load(path, self.model, self.inner, self.optimizer, verified=True)
        trainer = state["trainer"]
        changed = self.folder.check_resume(path, trainer["meta"], self._resume_settings())
        self.step = int(trainer["step"])
        self.scheduler.load_state_dict(trainer["scheduler"])
        if set(changed) & set(SCHEDULE_KEYS):
            recorded = {k: trainer["meta"][k] for k in ("init_lr", *SCHEDULE_KEYS)
                        if k in trainer["meta"]}
            said = continue_changed_schedule(self.scheduler, self.run, recorded,
                                             trainer["scheduler"], self.step)
            self._continued = self.scheduler.continued
            logger.warning("resuming with a changed schedule: %s%s", said,
                           "; run.init_lr shapes only a schedule's warm-up and peak, so it is "
                           "not used here" if "init_lr" in changed else "")
        if self.scaler is not None and trainer.get("scaler"):
            self.scaler.load_state_dict(trainer["scaler"])
        self.best = trainer.get("best", self.best)
        self.loader.load_state_dict(state["loader"])
        if trainer.get("validated") is False:  # killed between checkpoint and validation
            self._pending_validation = path
        self._resumed_from = path
        logger.info("resumed from %s at step %d", path, self.step)

    def _record(self, folder: str, keep: bool) -> None:
        """config.yaml and run_info.json of `folder` (the batching of training runs)."""
        batching = None
        if self.global_bs is not None:  # training runs: the batching derived for this world
            batching = dict(global_batch_size=self.global_bs, micro_batch_size=self.micro_bs,
                            accum_steps=self.accum)
            if self.budget is not None:  # micro-batches regrouped by tokens, accum is the loader's
                batching["max_tokens_per_micro_batch"] = self.budget.budget
        self.folder.record(self.cfg, folder, keep, self.info.world_size, batching)

    def train(self) -> dict[str, Any]:
        """Train to `max_iters` (or to a stop signal); returns {"step", "best",
        "last_checkpoint", "stopped_by"}."""
        self._setup_training()
        run = self.run
        try:  # wandb may refuse to start (a user-set WANDB_MODE that fails)
            log = RunLogger(self.output_dir, run.max_iters, self.step, enabled=self.is_main,
                            loggers=list(run.loggers), config=self.cfg.config,
                            revalidate=self._pending_validation is not None)
        except BaseException:
            self.loader.close()
            self.folder.release()
            raise
        self.signals = StopSignals().install()
        self.inner.train()
        stopped_by = None
        try:
            if self._resumed_from:
                continued = ({"schedule_continued_from": {"step": self._continued[0],
                                                          "lr": self._continued[1]}}
                             if self._continued else {})
                log.event(event="resume", step=self.step, path=self._resumed_from, **continued)
            if self._pending_validation:
                self._validate(self._pending_validation, log)
            while self.step < run.max_iters and stopped_by is None:
                stepped, stopped_by = self._train_step(log)
                done = self.step
                validate = stepped and run.val_every > 0 and (done % run.val_every == 0
                                                              or done == run.max_iters)
                save = stepped and (done == run.max_iters or (run.save_every > 0
                                                              and done % run.save_every == 0))
                if validate or save or (stopped_by and self.ckpt_step != done):
                    self._checkpoint(validate, log)
                    log.reset_rate()
                maybe_fault("LAVIS_IB_FAULT_AFTER_STEP", done)
                maybe_signal(done)
            if stopped_by:
                log.event(event="stopped", step=self.step, signal=stopped_by)
                logger.warning("%s: checkpointed step %d and stopped; continue with "
                               "run.resume=auto", stopped_by, self.step)
        finally:
            self.signals.restore()
            log.close()
            self.loader.close()
            self.folder.release()
        return {"step": self.step, "best": self.best, "last_checkpoint": self.last_checkpoint,
                "stopped_by": stopped_by}

    def _train_step(self, log: RunLogger) -> tuple[bool, str | None]:
        """One optimizer step; returns (stepped, the stop signal's name if any rank got
        one). A non-finite gradient norm skips the update and returns stepped=False."""
        from lavis_ib.datasets.loaders import num_samples

        info, model = self.info, self.model
        lr = self.scheduler.step(self.step)
        batches = self.loader.next_step()
        for event in self.loader.pop_bad_events():   # each unreadable file, once, in log.jsonl
            log.event(**event)
        if self.budget is not None:
            batches = self.budget.split(batches, self.step + 1)
            for event in self.budget.pop_events():
                log.event(**event)
        stats = torch.zeros(4, dtype=torch.float64, device=info.device)
        stats[3] = float(self.signals.requested is not None)
        terms: dict[str, torch.Tensor] = {}   # the model's loss_* parts, weighted by tokens
        dtype = autocast_dtype(self.run.amp)
        for a, batch in enumerate(batches):
            if num_samples(batch) == 0:
                if info.world_size > 1:
                    raise DataError(f"every sample of a micro-batch at step {self.step} was "
                                    f"unreadable ({batch.get('_bad_files')}); fix the files.")
                continue
            batch = move_to(batch, info.device)
            with self.strategy.sync_gradients(model, a == len(batches) - 1):
                with torch.autocast(info.device.type, dtype=dtype or torch.float32,
                                    enabled=dtype is not None):
                    out = self.task.train_step(model, batch)
                loss_sum, tokens = out["loss_sum"], out["num_tokens"]
                (self.scaler.scale(loss_sum) if self.scaler else loss_sum).backward()
            weight = torch.as_tensor(tokens, dtype=torch.float64, device=info.device)
            stats += torch.stack([loss_sum.detach().double(), weight,
                torch.tensor(float(num_samples(batch)), dtype=torch.float64, device=info.device),
                torch.zeros((), dtype=torch.float64, device=info.device)])
            for key in loss_terms(out):
                value = torch.as_tensor(out[key]).detach().to(info.device, torch.float64)
                terms[key] = terms.get(key, 0.0) + value * weight
        stats = torch.cat([stats, torch.stack(list(terms.values()))]) if terms else stats
        self.strategy.all_reduce_sum(stats)
        loss_total, tokens, samples, stop = stats[:4].tolist()
        parts = {k: v / max(tokens, 1.0) for k, v in zip(terms, stats[4:].tolist())}
        stop_name = (self.signals.requested or "SIGTERM") if stop > 0 else None
        loss = loss_total / max(tokens, 1.0)
        if not math.isfinite(loss):
            self.guard.stop(f"the training loss is {loss}", self.step + 1, log,
                            self.last_checkpoint)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        rescale_grads(self.params, info.world_size / max(tokens, 1.0))
        norm = self.guard.global_grad_norm()
        if not math.isfinite(norm):
            self.guard.skip_step(self.step + 1, norm, self.optimizer, self.scaler, log,
                                 self.last_checkpoint)
            return False, stop_name
        self.guard.stepped()
        clip_to(self.params, self.run.grad_clip, norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        every = max(self.run.log_every, 1)
        log.step(self.step, loss, lr, norm, int(samples), int(tokens),
                 log=self.step % every == 0 or self.step == 1 or self.step == self.run.max_iters,
                 terms=parts)
        return True, stop_name

    def _max_over_ranks(self, count: int) -> int:
        """The largest `count` over the ranks (the token budget's micro-step count)."""
        if self.info.world_size == 1:
            return int(count)
        value = torch.tensor([int(count)], dtype=torch.long, device=self.info.device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return int(value.item())

    def _checkpoint(self, validate: bool, log: RunLogger) -> None:
        if not self.guard.weights_finite():
            self.guard.stop("a trainable weight is not finite (not saved)", self.step + 1, log,
                            self.last_checkpoint, "non_finite_weights")
        trainer_state = {"step": self.step, "scheduler": self.scheduler.state_dict(),
                         "scaler": self.scaler.state_dict() if self.scaler else None,
                         "best": self.best, "validated": not validate}
        meta = {"distributed": self.run.distributed, **self._resume_settings(),
                "best": self.best, "validated": not validate}
        self.ckpt_step = self.step
        path = self.ckpt.save(self.step, self.model, self.inner, self.optimizer, trainer_state,
                              self.loader.state_dict(), meta)
        self.last_checkpoint = path
        log.event(event="checkpoint", step=self.step, path=path)
        log.flush()
        if validate:
            maybe_fault("LAVIS_IB_FAULT_BEFORE_VALIDATION", self.step)
            self._validate(path, log)

    def _validate(self, path: str, log: RunLogger) -> None:
        """Validate the model of checkpoint `path` (this step); keep `best/`; mark the
        checkpoint validated (a run killed before that re-validates it on resume)."""
        out_root = os.path.join(self.output_dir, "eval", f"step_{self.step:08d}")
        rng = rng_state()  # validation must not shift the training RNG (exact resume)
        valid = list(self.run.valid_splits)
        results = self._evaluate(self.datasets, valid, out_root, only=valid)
        set_rng_state(rng)
        metric = list(self.run.select_metric)
        score = select_score(results, metric) if metric else None
        log.validation(self.step, results, score)
        if score is not None and (self.best["score"] is None or score > self.best["score"]):
            self.best = {"score": score, "step": self.step}
            self.ckpt.save_best(path, score, self.step)
            log.event(event="best", step=self.step, score=score)
        self.ckpt.update_meta(path, best=self.best, validated=True)
        self.inner.train()

    # -- evaluation ---------------------------------------------------------------------
    def _evaluate(self, datasets: Mapping[str, Any], splits: list[str], out_root: str,
                  only: list[str] | None = None, fingerprint: str | None = None
                  ) -> dict[str, dict[str, float]]:
        with self.strategy.eval_mode(self.model) as inner:
            return evaluate_datasets(inner, datasets, self.datasets_cfg, splits,
                                     batch_size=self.run.batch_size_eval,
                                     num_workers=self.run.num_workers, device=self.info.device,
                                     out_root=out_root, amp=self.run.amp,
                                     timeout_s=self.run.dist_timeout_s, only=only,
                                     fingerprint=fingerprint,
                                     max_bad_sample_fraction=self.run.max_bad_sample_fraction)

    def evaluate(self, splits: list[str] | None = None, name: str = "evaluation",
                 checkpoint: str | None = None) -> dict[str, dict[str, float]]:
        """Evaluate every dataset's eval splits (`eval_splits`, else `splits`, else the
        run's test then validation splits) into `FOLDER/eval/<dataset>_<split>/`, FOLDER
        being `RunFolder.evaluation_folder(name)` with its own config.yaml and run_info.json. A
        rerun of the same evaluation (config and `checkpoint`) skips the ids done."""
        if self.model is None:
            self.model = self.strategy.wrap(self.inner)
        # a split listed in both test_splits and valid_splits is evaluated once
        default = splits or list(dict.fromkeys([*self.run.test_splits, *self.run.valid_splits]))
        folder = self.folder.evaluation_folder(name)
        out_root = os.path.join(folder, "eval")
        if self.is_main:  # the report reads the model type from the evaluation's config
            os.makedirs(folder, exist_ok=True)
            self._record(folder, keep=False)
        results = self._evaluate(self.datasets, default, out_root,
                                 fingerprint=evaluation_fingerprint(self.cfg.config, checkpoint))
        if self.is_main:
            os.makedirs(out_root, exist_ok=True)
            write_json_atomic(os.path.join(out_root, "metrics.json"), results, default=str)
            remove_partials(out_root)  # every split is complete
        return results

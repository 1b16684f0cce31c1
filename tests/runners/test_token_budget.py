"""Token-budget micro-batches (`run.max_tokens_per_micro_batch`).

Fast: the split keeps the budget, takes every sample once and gives any number of
micro-batches the ranks agree on; a sample over the budget runs alone and is counted;
the tiny models' token counts equal soft prompts + the tokenizer's own ids; one
optimizer step of the toy runner has, under any budget, the gradient of the whole global
batch as one batch normalised by its target tokens (computed here, apart from the
runner). Slow (integration): FSDP on two processes with the budget and 2 loader workers
matches one process without it, and killed after step 3 resumes exactly."""
from __future__ import annotations

import copy
import os
import random

import pytest
import torch

from lavis_ib.common.errors import ConfigError
from lavis_ib.datasets.loaders import MixtureLoader
from lavis_ib.datasets.mixing import merge_batches, num_samples
from lavis_ib.models.token_counts import training_token_counts
from lavis_ib.runners.stop_signals import StopSignals
from lavis_ib.runners.batching import padded_positions, token_budget_split
from lavis_ib.runners.token_budget import TokenBudget
from runner_helpers import launch, losses, write_project


# -- the split ---------------------------------------------------------------------------
def test_split_by_hand():
    counts = [5, 12, 3, 12, 7, 4]
    # longest first: 12 (1), 12 (3), 7 (4), 5 (0), 4 (5), 3 (2); 2 x 12 <= 24, then 3 x 7 > 20
    assert token_budget_split(counts, 24) == [[1, 3], [0, 4, 5], [2]]
    assert token_budget_split(counts, 20) == [[1], [3], [0, 4], [2, 5]]
    assert token_budget_split(counts, 1000) == [[0, 1, 2, 3, 4, 5]]
    assert token_budget_split(counts, 1) == [[1], [3], [4], [0], [5], [2]]  # each over: alone
    # more parts: the micro-batch of most padded positions among those of 2+ is halved
    assert token_budget_split(counts, 1000, 2) == [[1, 3, 4], [0, 2, 5]]
    assert token_budget_split(counts, 24, 4) == [[1], [3], [0, 4, 5], [2]]


@pytest.mark.parametrize("seed", range(4))
def test_split_keeps_the_budget_and_takes_every_sample_once(seed):
    rng = random.Random(seed)
    counts = [rng.randint(1, 60) for _ in range(rng.randint(1, 40))]
    for budget in (30, 64, 150, 10_000):
        greedy = token_budget_split(counts, budget)
        for parts in (None, len(greedy), (len(greedy) + len(counts)) // 2, len(counts)):
            groups = token_budget_split(counts, budget, parts)
            assert sorted(i for g in groups for i in g) == list(range(len(counts)))
            assert all(g for g in groups) and len(groups) == (parts or len(greedy))
            for g in groups:
                assert len(g) == 1 or padded_positions(counts, g) <= budget
        # the fewest micro-batches that keep the budget, splitting samples sorted by length
        ordered = sorted(counts, reverse=True)
        fewest, i = 0, 0
        while i < len(ordered):
            n = max(1, budget // ordered[i])
            fewest, i = fewest + 1, i + n
        assert len(greedy) == fewest
        with pytest.raises(ValueError):
            token_budget_split(counts, budget, len(counts) + 1)


def test_schema_refuses_a_budget_below_one():
    from lavis_ib.common.schema import validate_run

    with pytest.raises(ConfigError, match="max_tokens_per_micro_batch"):
        validate_run({"max_tokens_per_micro_batch": 0})
    assert validate_run({}).max_tokens_per_micro_batch is None


# -- the splitter on two ranks -------------------------------------------------------------
def _rank_loader(toys, rank, world, **kw):
    sets = {"toy_a": toys.ToyDataset(40, 1, "train"), "toy_b": toys.ToyDataset(30, 2, "train")}
    return MixtureLoader(sets, {"toy_b": 2.0}, 16, 4, rank, world, seed=3, **kw)


def _toy_counts(batch):
    return [3 + 1 + len(t) for t in batch["text_output"]]


def _rows(batch):
    return [(name, tuple(batch["image"][i].flatten().tolist()),
             tuple(batch["_dropout_keys"][i].tolist()))
            for i, name in enumerate(batch["instance_id"])]


def test_ranks_run_as_many_micro_steps_and_keep_their_samples(toys):
    """Two ranks' shares of each step: a different greedy count on some step, the same
    number of micro-batches after agreeing, and exactly the samples the loader gave."""
    loaders = [_rank_loader(toys, r, 2) for r in range(2)]
    differed = False
    for step in range(6):
        shares = [loader.next_step() for loader in loaders]
        merged = [merge_batches(s, [4] * len(s)) for s in shares]
        greedy = [len(token_budget_split(_toy_counts(m), 20)) for m in merged]
        differed |= greedy[0] != greedy[1]
        split = [TokenBudget(20, _toy_counts, lambda n: max(greedy), 4).split(s, step + 1)
                 for s in shares]
        assert len(split[0]) == len(split[1]) == max(greedy)
        for m, micro in zip(merged, split):
            # every sample once, its image and dropout key travelling with it
            assert sorted(row for b in micro for row in _rows(b)) == sorted(_rows(m))
            assert sum(num_samples(b) for b in micro) == num_samples(m)
    assert differed, "the test data should give the ranks different greedy counts"


def test_a_sample_over_the_budget_runs_alone_and_is_counted(toys, caplog):
    loader = _rank_loader(toys, 0, 1)
    budget = TokenBudget(6, _toy_counts, lambda n: n, 4)
    batches = budget.split(loader.next_step(), 1)
    counts = [_toy_counts(b) for b in batches]
    over = sum(c > 6 for cs in counts for c in cs)
    assert over and all(len(cs) == 1 for cs in counts if max(cs) > 6)
    assert all(padded_positions(cs, range(len(cs))) <= 6 for cs in counts if max(cs) <= 6)
    assert budget.over_budget == over
    (event,) = budget.pop_events()
    assert event["event"] == "over_token_budget" and event["samples"] == over
    assert "longer than run.max_tokens_per_micro_batch = 6" in caplog.text
    assert budget.pop_events() == []


# -- token counts of the tiny models ------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny_vicuna", "tiny_flant5"])
def test_token_counts_are_soft_prompts_plus_the_tokenizers_ids(name, request):
    model = request.getfixturevalue(name)
    tok = model.llm_tokenizer
    batch = {"image": torch.zeros(3, 3, 16, 16), "text_input": ["What is it?", "Describe", ""],
             "text_output": ["a cat", "two dogs playing in the snow", "no"]}
    queries = model.query_tokens.shape[1]
    want = [queries + len(tok(a).input_ids) + len(tok(t, add_special_tokens=False).input_ids) + 1
            for a, t in zip(batch["text_input"], batch["text_output"])]
    assert training_token_counts(model, batch) == want
    video = {**batch, "image": torch.zeros(3, 3, 2, 16, 16)}   # 2 frames: twice the queries
    assert training_token_counts(model, video) == [w + queries for w in want]
    with pytest.raises(ConfigError, match="sample_token_counts"):
        training_token_counts(torch.nn.Linear(2, 2), batch)


# -- one optimizer step: the gradient of the whole global batch -----------------------------
class _Log:
    """The runner's log sink (nothing is checked through it)."""

    def __init__(self):
        self.events = []

    def event(self, **record):
        self.events.append(record)

    def step(self, *args, **kwargs):
        pass


def _runner(folder, **run):
    from lavis_ib.cli.session import build
    from lavis_ib.common.config import Config
    from lavis_ib.runners.strategies import setup_distributed

    cfg = Config(write_project(folder, grad_clip=None, **run), [])
    _, model, _, runner = build(cfg, setup_distributed(cfg.run_cfg))
    return model, runner


def _step_grads(runner, model):
    """[(gradients applied, weights before the step)] of each optimizer step."""
    seen = []
    step = runner.optimizer.step

    def record(*args, **kwargs):
        seen.append(([p.grad.detach().clone() for p in runner.params],
                     copy.deepcopy(model.state_dict())))
        return step(*args, **kwargs)

    runner.optimizer.step = record
    return seen


@pytest.mark.parametrize("budget", [None, 9, 16, 40])
def test_a_step_has_the_gradient_of_the_whole_batch_whatever_the_split(tmp_path, toys, budget):
    model, runner = _runner(tmp_path, max_tokens_per_micro_batch=budget, global_batch_size=16)
    reference = copy.deepcopy(model)
    runner._setup_training()
    runner.signals = StopSignals()   # not installed: no signal arrives
    model.train()
    seen, log = _step_grads(runner, model), _Log()
    try:
        for _ in range(2):
            runner._train_step(log)
    finally:
        runner.loader.close()
        runner.folder.release()
    if budget is not None:   # the split really varies: several micro-batches of other sizes
        assert runner.budget.last_counts != [4] * 4 and len(runner.budget.last_counts) > 1
        assert all(n == 1 or p <= budget for n, p in zip(runner.budget.last_counts,
                                                        runner.budget.last_positions))
    # the reference: the step's whole global batch in one forward, summed NLL / target tokens
    sets, ratios = runner._train_sets()
    whole = MixtureLoader(sets, ratios, 16, 16, 0, 1, seed=3, mix_group=4)
    params = [p for p in reference.parameters() if p.requires_grad]
    assert len(seen) == 2
    for got, weights in seen:
        (batch,) = whole.next_step()
        reference.load_state_dict(weights)   # the weights the runner's step started from
        reference.zero_grad()
        out = reference(batch)
        (out["loss_sum"] / out["num_tokens"]).backward()
        for g, p in zip(got, params):
            torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-7)


# -- two processes, and resume ---------------------------------------------------------------
def _ok(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.integration
def test_fsdp_with_a_budget_matches_one_process_and_resumes_exactly(tmp_path, toys):
    """FSDP on 2 processes with the budget and 2 loader workers, killed after step 3 and
    resumed from step 2: the resumed step 3 repeats the killed run's bit for bit, and every
    step matches one process without the budget (1e-5), the ranks having needed different
    numbers of micro-batches (checked here with their loaders)."""
    from lavis_ib.runners.checkpointing.manager import load_trainable_weights

    short = dict(max_iters=4, val_every=0, save_every=2)
    ref_model, ref = _runner(tmp_path / "ref", **short)
    ref.train()   # the reference, in this process
    sets, ratios = ref._train_sets()
    shares = [MixtureLoader(sets, ratios, 8, 4, r, 2, seed=3) for r in range(2)]
    greedy = [[len(token_budget_split(_toy_counts(merge_batches(loader.next_step(), [4, 4])), 14))
               for _ in range(4)] for loader in shares]
    assert greedy[0] != greedy[1], greedy

    path = write_project(tmp_path / "fsdp", distributed="fsdp", grad_clip=None, resume="auto",
                         max_tokens_per_micro_batch=14, num_workers=2, **short)
    out = os.path.join(tmp_path, "fsdp", "run")
    killed = launch(path, nproc=2, timeout=150, env={"LAVIS_IB_FAULT_AFTER_STEP": "3"})
    before = losses(out)
    assert killed.returncode != 0 and sorted(before) == [1, 2, 3]
    _ok(launch(path, nproc=2, timeout=150))
    got, want = losses(out), losses(ref.output_dir)
    assert got[3] == before[3]   # step 3 again from checkpoint 2, bit for bit
    assert sorted(got) == sorted(want) == [1, 2, 3, 4]
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-5, abs=1e-6)
    model = toys.ToyIB()
    load_trainable_weights(model, out)
    ref_params = dict(ref_model.named_parameters())
    for name, param in model.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param, ref_params[name], rtol=1e-5, atol=1e-6)

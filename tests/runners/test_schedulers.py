"""LR schedulers: values at chosen steps equal the closed forms; registration; resume."""
import math

import pytest
import torch

from lavis_ib.common.errors import ConfigError
from lavis_ib.common.registry import registry
from lavis_ib.common.schema import validate_run


def _opt():
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2, 2))], lr=0.0)


def _sched(name, **run):
    run = validate_run({"lr_sched": name, **run})
    return registry.get_lr_scheduler_class(name).from_config(_opt(), run)


def test_registered_under_lavis_names():
    assert {"linear_warmup_cosine_lr", "linear_warmup_step_lr", "constant_lr"} <= set(
        registry.lr_schedulers.names())


def test_paper_recipe_cosine_closed_form():
    s = _sched("linear_warmup_cosine_lr", init_lr=1e-5, warmup_lr=1e-8, warmup_steps=1000,
               min_lr=0.0, max_iters=60000)
    warm = lambda k: 1e-8 + (1e-5 - 1e-8) * k / 1000  # noqa: E731
    cos = lambda k: 0.5 * 1e-5 * (1 + math.cos(math.pi * (k - 1000) / 59000))  # noqa: E731
    for step in (0, 1, 500, 999):
        assert s.step(step) == pytest.approx(warm(step), rel=1e-12, abs=0)
        assert s.optimizer.param_groups[0]["lr"] == s.lr_at(step)
    for step in (1000, 1001, 15000, 30500, 59999, 60000):
        assert s.step(step) == pytest.approx(cos(step), rel=1e-12, abs=1e-30)
    assert s.lr_at(0) == 1e-8 and s.lr_at(1000) == 1e-5
    assert s.lr_at(30500) == pytest.approx(0.5e-5, rel=1e-12)
    assert s.lr_at(60000) == pytest.approx(0.0, abs=1e-20)


def test_cosine_floor_is_min_lr_and_no_warmup():
    s = _sched("linear_warmup_cosine_lr", init_lr=1.0, min_lr=0.1, warmup_steps=0, max_iters=10)
    assert s.lr_at(0) == 1.0
    assert s.lr_at(5) == pytest.approx(0.1 + 0.9 * 0.5, rel=1e-12)
    assert s.lr_at(10) == pytest.approx(0.1, rel=1e-12)
    assert s.lr_at(25) == pytest.approx(0.1, rel=1e-12)  # past max_iters: stays at min_lr


def test_step_lr_closed_form():
    s = _sched("linear_warmup_step_lr", init_lr=1e-4, warmup_lr=1e-6, warmup_steps=10,
               min_lr=2e-5, lr_decay_rate=0.5, lr_decay_every=100, max_iters=1000)
    assert s.lr_at(5) == pytest.approx(1e-6 + (1e-4 - 1e-6) * 5 / 10, rel=1e-12)
    assert s.lr_at(10) == 1e-4 and s.lr_at(109) == 1e-4
    assert s.lr_at(110) == pytest.approx(5e-5, rel=1e-12)
    assert s.lr_at(210) == pytest.approx(2.5e-5, rel=1e-12)
    assert s.lr_at(310) == 2e-5  # floored at min_lr


def test_constant_lr():
    s = _sched("constant_lr", init_lr=3e-4, warmup_lr=0.0, warmup_steps=4, max_iters=100)
    assert [s.lr_at(k) for k in (0, 2, 4, 99)] == pytest.approx([0.0, 1.5e-4, 3e-4, 3e-4])


def test_state_dict_restores_the_lr():
    s = _sched("linear_warmup_cosine_lr", init_lr=1.0, warmup_steps=2, warmup_lr=0.0, max_iters=10)
    s.step(7)
    other = _sched("linear_warmup_cosine_lr", init_lr=1.0, warmup_steps=2, warmup_lr=0.0, max_iters=10)
    other.load_state_dict(s.state_dict())
    assert other.optimizer.param_groups[0]["lr"] == s.lr_at(7)


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="max_iters"):
        _sched("constant_lr", max_iters=0)
    with pytest.raises(ConfigError, match="lr_decay_every"):
        _sched("linear_warmup_step_lr", lr_decay_every=0)


def test_a_continued_schedule_starts_at_the_given_lr_without_warmup():
    """continue_from(R, L): from L at step R, cosine to min_lr at max_iters; step decay from
    L; constant L; the steps before R keep the planned schedule; the state keeps it."""
    cos = _sched("linear_warmup_cosine_lr", init_lr=1.0, min_lr=0.1, warmup_steps=5,
                 warmup_lr=0.0, max_iters=40)
    cos.continue_from(20, 0.3)
    assert cos.lr_at(19) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 14 / 35)))
    for k in (20, 21, 30, 39, 40):
        want = 0.1 + 0.2 * 0.5 * (1 + math.cos(math.pi * (k - 20) / 20))
        assert cos.lr_at(k) == pytest.approx(want, rel=1e-12)
    assert cos.lr_at(20) == 0.3 and cos.lr_at(40) == pytest.approx(0.1, rel=1e-12)
    again = _sched("linear_warmup_cosine_lr", init_lr=1.0, min_lr=0.1, warmup_steps=5,
                   warmup_lr=0.0, max_iters=40)
    again.load_state_dict(cos.state_dict())
    assert [again.lr_at(k) for k in (19, 25, 40)] == [cos.lr_at(k) for k in (19, 25, 40)]
    step = _sched("linear_warmup_step_lr", init_lr=1.0, min_lr=0.05, lr_decay_rate=0.5,
                  lr_decay_every=10, warmup_steps=100, max_iters=200)
    step.continue_from(40, 0.4)   # inside the old warm-up: no warm-up after the resume
    assert [step.lr_at(k) for k in (40, 49, 50, 60, 79)] == pytest.approx(
        [0.4, 0.4, 0.2, 0.1, 0.05], rel=1e-12)
    const = _sched("constant_lr", init_lr=1.0, warmup_lr=0.0, warmup_steps=10, max_iters=50)
    const.continue_from(3, 0.25)
    assert [const.lr_at(k) for k in (2, 3, 9, 49)] == pytest.approx([0.2, 0.25, 0.25, 0.25])

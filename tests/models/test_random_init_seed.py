"""The random route (tiny types) is seeded by `model.random_init_seed`, not by whatever the
global RNG holds, so separate processes build identical models."""
import pytest
import torch

from lavis_ib.common.errors import ConfigError
from lavis_ib.models.loading import load_model


def _weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_same_seed_same_weights_whatever_the_global_rng():
    torch.manual_seed(1)
    first = _weights(load_model("instructblip", "tiny_opt"))
    torch.manual_seed(2)
    state = torch.get_rng_state()
    second = _weights(load_model("instructblip", "tiny_opt"))
    assert torch.equal(first, second)
    assert torch.equal(torch.get_rng_state(), state)   # the caller's RNG is left alone
    other = _weights(load_model("instructblip", "tiny_opt", random_init_seed=3))
    assert not torch.equal(first, other)


def test_a_bad_seed_is_one_error():
    from lavis_ib.models.config import model_problems

    assert model_problems({"random_init_seed": -1}) == [
        "model.random_init_seed must be an integer >= 0; got -1."]
    with pytest.raises(ConfigError, match="unknown setting 'random_init_sed'.*random_init_seed"):
        load_model("instructblip", "tiny_opt", random_init_sed=3)

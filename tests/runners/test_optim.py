"""AdamW groups, batch derivation and global-token-count loss normalisation."""
import pytest
import torch

from lavis_ib.common.errors import ConfigError
from lavis_ib.common.schema import validate_run
from lavis_ib.runners.batching import derive_batching
from lavis_ib.runners.optim import build_optimizer, clip_grads, param_groups, rescale_grads


def test_decay_groups_follow_dimensions_and_decay_query_tokens(toys):
    model = toys.ToyIB()
    groups = param_groups(model.trainable_parameters(), 0.05)
    decay, no_decay = groups[0], groups[1]
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert "query_tokens" in decay["names"] and "proj.weight" in decay["names"]
    assert "proj.bias" in no_decay["names"] and "ln_q.weight" in no_decay["names"]
    assert not any(n.startswith(("encoder", "llm", "lm_head", "patch"))
                   for g in groups for n in g["names"])  # frozen parts are not optimised
    opt = build_optimizer(model.trainable_parameters(), validate_run({"beta2": 0.98}))
    assert opt.defaults["betas"] == (0.9, 0.98)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.trainable_parameters()))


def test_no_trainable_parameters_is_an_error():
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        param_groups(frozen.named_parameters(), 0.05)


@pytest.mark.parametrize("run,world,expected", [
    ({"global_batch_size": 192, "batch_size_train": 8}, 16, (192, 6, 2)),   # FlanT5-XL
    ({"global_batch_size": 128, "batch_size_train": 8}, 16, (128, 8, 1)),   # Vicuna-7B
    ({"global_batch_size": 64, "batch_size_train": 4}, 8, (64, 4, 2)),
    ({"global_batch_size": 128, "batch_size_train": 8}, 1, (128, 8, 16)),
    ({"global_batch_size": 24, "batch_size_train": 5}, 2, (24, 4, 3)),
    ({"batch_size_train": 4, "accum_grad_iters": 3}, 2, (24, 4, 3)),      # LAVIS rule
    ({"global_batch_size": 16, "batch_size_train": 8, "accum_grad_iters": 4}, 2, (16, 2, 4)),
])
def test_batching_is_derived_from_the_world_size(run, world, expected):
    glob, micro, accum = derive_batching(validate_run(run), world)
    assert (glob, micro, accum) == expected and micro * accum * world == glob


def test_impossible_global_batch_is_a_config_error():
    with pytest.raises(ConfigError, match="not divisible"):
        derive_batching(validate_run({"global_batch_size": 10}), 4)
    with pytest.raises(ConfigError, match="accum_grad_iters"):
        derive_batching(validate_run({"global_batch_size": 12, "accum_grad_iters": 5}), 2)


def _grads(model):
    return [p.grad.clone() for p in model.parameters() if p.requires_grad]


def test_any_split_of_a_batch_gives_the_same_gradient(toys):
    """loss_sum per micro-batch, then x world/tokens: equals the mean over all tokens,
    although the micro-batches hold different numbers of tokens."""
    ds = toys.ToyDataset(8, 5, "train")
    full = ds.collater([ds[i] for i in range(8)])
    parts = [ds.collater([ds[i] for i in idx]) for idx in ([0, 1, 2], [3], [4, 5, 6, 7])]
    torch.manual_seed(0)
    model = toys.ToyIB()
    model(full)["loss"].backward()
    reference = _grads(model)
    model.zero_grad()
    tokens = 0
    for batch in parts:
        out = model(batch)
        out["loss_sum"].backward()
        tokens += int(out["num_tokens"])
    assert len({len("".join(b["text_output"])) for b in parts}) > 1
    rescale_grads([p for p in model.parameters() if p.requires_grad], 1 / tokens)
    for got, want in zip(_grads(model), reference):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_clipping_bounds_the_norm():
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([3.0, 4.0, 0.0])
    assert clip_grads([p], None) == pytest.approx(5.0)
    assert clip_grads([p], 1.0) == pytest.approx(5.0)
    assert float(p.grad.norm()) == pytest.approx(1.0, rel=1e-5)

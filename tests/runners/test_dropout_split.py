"""Any split of the global batch gives the same gradients with the Q-Former's dropout on
(docs/determinism.md): per-sample keys from (seed, step, slot), masks hashed from (key,
site, coordinates).

Fast checks: the masks' statistics and their independence of padding; the keys the
loader hands out on 1 and on 2 ranks; the tiny model's loss and gradients for one batch
cut into micro-batches of 4, 2 and 1, with and without gradient checkpointing. Slow: the
demo project trained with dropout 0.3 in one process, under DDP and under FSDP on two
processes, the same losses within 1e-5 at every step."""
from __future__ import annotations

import pytest
import torch

from lavis_ib.common.dropout_keys import FIELD, dropout_keys
from lavis_ib.models.components.sample_dropout import derive_keys, frame_keys, keep_mask
from runner_helpers import launch, losses

P = 0.3


def test_masks_keep_one_minus_p_and_differ_per_sample_and_site():
    keys = dropout_keys(1, 0, range(8))
    mask = keep_mask(keys, site=7, shape=(40, 64), p=P, device=torch.device("cpu"))
    assert mask.shape == (8, 40, 64)
    kept = mask.float().mean().item()
    assert abs(kept - (1 - P)) < 0.01, kept
    # samples and sites: agreement at chance level (p^2 + (1-p)^2), not equal masks
    chance = P * P + (1 - P) * (1 - P)
    other_site = keep_mask(keys, site=8, shape=(40, 64), p=P, device=torch.device("cpu"))
    for a, b in ((mask[0], mask[1]), (mask[0], other_site[0])):
        assert abs((a == b).float().mean().item() - chance) < 0.03
    # neighbours are independent too (no structure along the packed coordinates)
    for a, b in ((mask[..., 1:], mask[..., :-1]), (mask[:, 1:], mask[:, :-1])):
        assert abs((a == b).float().mean().item() - chance) < 0.02
    # rows and columns carry no pattern: per-row and per-column keep rates near 1 - p
    assert (mask.float().mean(dim=(0, 2)) - (1 - P)).abs().max() < 0.08
    assert (mask.float().mean(dim=(0, 1)) - (1 - P)).abs().max() < 0.1


def test_a_position_keeps_its_mask_whatever_the_padding():
    keys = dropout_keys(1, 3, [5, 9])
    short = keep_mask(keys, 11, (2, 10, 12), P, torch.device("cpu"))   # (heads, rows, keys)
    more_keys = keep_mask(keys, 11, (2, 10, 17), P, torch.device("cpu"))
    assert torch.equal(short, more_keys[..., :12])   # attention over padded keys
    more_rows = keep_mask(keys, 11, (2, 13, 12), P, torch.device("cpu"))
    assert torch.equal(short, more_rows[:, :, :10])  # padded instruction rows


def test_keys_are_a_function_of_seed_step_and_slot_only():
    a = dropout_keys(42, 5, [0, 1, 2, 3])
    assert torch.equal(a[2:], dropout_keys(42, 5, [2, 3]))
    assert not torch.equal(a, dropout_keys(42, 6, [0, 1, 2, 3]))
    assert not torch.equal(a, dropout_keys(43, 5, [0, 1, 2, 3]))
    assert len({tuple(r) for r in a.tolist()}) == 4
    frames = frame_keys(a, 8)                        # 2 video frames per sample
    assert frames.shape == (8, 2) and len({tuple(r) for r in frames.tolist()}) == 8
    assert not torch.equal(derive_keys(a, 1), a)


def _loader(toys, world, rank, mix_unit):
    from lavis_ib.datasets.loaders import MixtureLoader

    sets = {"a": toys.ToyDataset(10, 1, "train"), "b": toys.ToyDataset(7, 2, "train")}
    return MixtureLoader(sets, None, 8, 2, rank, world, seed=3, num_workers=0,
                         mix_unit=mix_unit)


@pytest.mark.parametrize("mix_unit", ["micro_batch", "sample"])
def test_the_loader_gives_each_slot_the_same_key_on_one_and_two_ranks(toys, mix_unit):
    one = _loader(toys, 1, 0, mix_unit)
    two = [_loader(toys, 2, r, mix_unit) for r in range(2)]
    for _ in range(3):
        single = one.next_step()                     # 4 micro-batches
        ranks = [loader.next_step() for loader in two]   # 2 each; micro a, rank r = a*2+r
        split = [ranks[k % 2][k // 2] for k in range(4)]
        for b1, b2 in zip(single, split):
            assert torch.equal(b1[FIELD], b2[FIELD])
            assert b1["instance_id"] == b2["instance_id"]
        ids = [i for b in single for i in b["instance_id"]]
        assert len({tuple(r) for b in single for r in b[FIELD].tolist()}) == len(ids)


def test_run_per_sample_dropout_false_gives_no_keys(toys):
    from lavis_ib.common.schema import RunConfig
    from lavis_ib.datasets.loaders import MixtureLoader

    assert RunConfig.per_sample_dropout is True
    loader = MixtureLoader({"a": toys.ToyDataset(10, 1, "train")}, None, 4, 2, 0, 1, seed=3,
                           per_sample_dropout=False)
    assert all(FIELD not in batch for batch in loader.next_step())


def _batch(n=4):
    g = torch.Generator().manual_seed(1)
    texts = ["what is this?", "describe the picture in detail please", "a",
             "is there a dog on the left of the bus?"]
    outs = ["a dog", "two cats on a mat", "yes", "no"]
    return {"image": torch.randn(n, 3, 32, 32, generator=g), "text_input": texts[:n],
            "text_output": outs[:n], FIELD: dropout_keys(3, 0, range(n))}


def _part(batch, idx):
    return {k: (v[idx] if isinstance(v, torch.Tensor) else [v[i] for i in idx])
            for k, v in batch.items()}


def _loss_and_grads(model, batch, cuts):
    model.zero_grad(set_to_none=True)
    total, tokens = 0.0, 0
    for idx in cuts:
        out = model(_part(batch, idx))
        out["loss_sum"].backward()
        total += out["loss_sum"].item()
        tokens += int(out["num_tokens"])
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return total / tokens, grads


@pytest.fixture(scope="module")
def dropout_model():
    from lavis_ib import load_model

    torch.manual_seed(0)
    model = load_model("instructblip", "tiny_vicuna", qformer={
        "hidden_dropout_prob": P, "attention_probs_dropout_prob": P})
    model.train()
    return model


def test_any_cut_of_a_batch_gives_the_same_loss_and_gradients(dropout_model):
    model, batch = dropout_model, _batch()
    loss4, grads4 = _loss_and_grads(model, batch, [[0, 1, 2, 3]])
    for cuts in ([[0, 1], [2, 3]], [[0], [1], [2], [3]], [[2, 0], [3, 1]]):
        loss, grads = _loss_and_grads(model, batch, cuts)
        assert loss == pytest.approx(loss4, abs=1e-6)
        for name, grad in grads4.items():
            torch.testing.assert_close(grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    # dropout is on: without keys (ordinary dropout) and in eval mode the loss differs
    model.eval()
    eval_loss, _ = _loss_and_grads(model, batch, [[0, 1, 2, 3]])
    model.train()
    assert abs(eval_loss - loss4) > 1e-4
    # and gradient checkpointing recomputes each layer with the same masks
    model.set_gradient_checkpointing(qformer=True)
    try:
        loss_ckpt, grads_ckpt = _loss_and_grads(model, batch, [[0, 1], [2, 3]])
    finally:
        model.set_gradient_checkpointing(qformer=False)
    assert loss_ckpt == pytest.approx(loss4, abs=1e-6)
    for name, grad in grads4.items():
        torch.testing.assert_close(grads_ckpt[name], grad, atol=1e-5, rtol=1e-4, msg=name)


# -- the demo project on 1 and 2 processes, dropout on ---------------------------------

DATASETS = ("coco_caption", "textcaps", "ok_vqa", "aok_vqa", "ocr_vqa", "llava_detail")
DROPOUT_ON = [f"+model.qformer.hidden_dropout_prob={P}",
              f"+model.qformer.attention_probs_dropout_prob={P}",
              "run.max_iters=3", "run.log_every=1", "run.warmup_steps=2", "run.val_every=0"]


@pytest.fixture(scope="module")
def demo_data(fixture_root):
    return fixture_root.path


@pytest.fixture(scope="module")
def one_process(demo_data, tmp_path_factory):
    from lavis_ib.common.paths import package_path

    out = str(tmp_path_factory.mktemp("one") / "run")
    demo = package_path("configs/projects/instructblip/demo_tiny.yaml")
    proc = launch(demo, [*DROPOUT_ON, f"run.output_dir={out}"], timeout=240,
                  env={"LAVIS_IB_DEMO_DATA": demo_data})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return demo, losses(out)


@pytest.mark.integration
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one_with_dropout_on(one_process, demo_data, tmp_path, strategy):
    demo, want = one_process
    out = str(tmp_path / strategy)
    proc = launch(demo, [*DROPOUT_ON, f"run.distributed={strategy}", f"run.output_dir={out}"],
                  nproc=2, timeout=300, env={"LAVIS_IB_DEMO_DATA": demo_data})
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = losses(out)
    assert sorted(got) == sorted(want) == [1, 2, 3]
    for step in want:
        assert got[step] == pytest.approx(want[step], abs=1e-5, rel=1e-5), (step, got, want)

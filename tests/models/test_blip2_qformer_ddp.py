"""1 process == 2 processes for BLIP-2 stage 1 under the default ITC gather.

Two DDP processes (torchrun --standalone, gloo) take 4 + 4 and 5 + 3 rows (a rank that lost
samples) of a batch of 8 whose image ids repeat across ranks, back-propagate `loss_sum`
and scale the averaged gradients as the runner does (x world size / samples of the step).
The loss parts and every gradient equal those of one process on the whole batch (float64,
to 1e-9). With `itc_gather: lavis` the losses still agree but the gradients do not: each
rank then back-propagates ITC through its own features only, which is why it is not the
default.

Run by pytest (slow); torchrun runs this file as the worker.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
N = 8
#: rows of each rank: halves, and an uneven split (a rank that lost samples to bad files)
SPLITS = {"autograd": (0, 4, 8), "lavis": (0, 4, 8), "uneven": (0, 5, 8)}


def build(gather: str):
    """The tiny type without dropout, in float64 so that summation order cannot hide a
    difference (the losses stay in the model's precision)."""
    from lavis_ib import load_model

    return load_model("blip2", "tiny", itc_gather=gather,
                      qformer={"hidden_dropout_prob": 0.0,
                               "attention_probs_dropout_prob": 0.0}).double().train()


def batch(rows: slice = slice(None)) -> dict:
    images = torch.randn(N, 3, 32, 32, generator=torch.Generator().manual_seed(0),
                         dtype=torch.float64)
    texts = ["a dog", "a dog runs", "two birds", "a red car", "a cat", "the sun",
             "green grass", "a boat"]
    ids = [1, 2, 3, 1, 4, 2, 5, 6]
    return {"image": images[rows], "text_output": texts[rows], "image_id": ids[rows]}


def step(model, samples) -> dict:
    """Forward and backward as the runner does, with the ITM draws seeded alike."""
    torch.manual_seed(123)
    out = model(samples)
    out["loss_sum"].backward()
    return {k: float(v.detach()) for k, v in out.items() if k.startswith("loss") and k != "loss_sum"} | {
        "loss_sum": float(out["loss_sum"].detach()), "num_tokens": int(out["num_tokens"])}


def worker(path: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    results = {}
    for case, cuts in SPLITS.items():
        model = build("lavis" if case == "lavis" else "autograd")
        ddp = DDP(model, find_unused_parameters=True)
        out = step(ddp, batch(slice(cuts[rank], cuts[rank + 1])))
        stats = torch.tensor([out["loss_sum"], out["num_tokens"]] +
                             [out[k] * out["num_tokens"] for k in ("loss_itc", "loss_itm", "loss_lm")],
                             dtype=torch.float64)
        dist.all_reduce(stats)
        samples = float(stats[1])
        grads = {n: p.grad * (world / samples) for n, p in model.named_parameters()
                 if p.grad is not None}
        results[case] = {"loss": float(stats[0]) / samples,
                           "parts": (stats[2:] / samples).tolist(), "grads": grads}
    if rank == 0:
        torch.save(results, path)
    dist.destroy_process_group()


def single(gather: str) -> dict:
    model = build(gather)
    out = step(model, batch())
    return {"loss": out["loss"], "parts": [out["loss_itc"], out["loss_itm"], out["loss_lm"]],
            "grads": {n: p.grad / N for n, p in model.named_parameters() if p.grad is not None}}


@pytest.mark.integration
def test_two_processes_give_the_loss_and_gradients_of_one(tmp_path):
    path = str(tmp_path / "ddp.pt")
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", os.path.abspath(__file__), path],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    two = torch.load(path, weights_only=True)
    for case in SPLITS:
        one = single("lavis" if case == "lavis" else "autograd")
        assert two[case]["loss"] == pytest.approx(one["loss"], abs=1e-10), case
        assert two[case]["parts"] == pytest.approx(one["parts"], abs=1e-10), case
        assert set(two[case]["grads"]) == set(one["grads"])
        close = [torch.allclose(two[case]["grads"][n], g, atol=1e-12, rtol=1e-9)
                 for n, g in one["grads"].items()]
        if case == "lavis":   # LAVIS's gather: the same loss, other gradients
            assert not all(close)
        else:
            bad = [n for n, ok in zip(one["grads"], close) if not ok]
            assert not bad, (case, bad)


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    worker(sys.argv[1])

"""Run under torchrun by test_lora_fsdp.py: a bf16 LLM with fp32 LoRA adapters, sharded by
FSDP2 as `QFormerLLM.shard_units()` arranges it (each adapter layer a unit of its own,
then the bf16 blocks around them, then the bf16 LLM root). Each rank back-propagates
its half of a batch; the averaged adapter gradients are compared with the unsharded
LLM's, computed in the same process. Writes the counts, the largest relative difference and the dtypes as JSON."""
from __future__ import annotations

import copy
import datetime
import json
import sys

import torch
import torch.distributed as dist


def main(out_path: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from lavis_ib import load_model

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))  # a hang fails fast
    rank, world = dist.get_rank(), dist.get_world_size()
    model = load_model("instructblip", "tiny_vicuna", llm_precision="bf16",
                       llm_lora={"r": 4, "alpha": 8})
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero B, so that A gets gradients too
        for name, p in model.llm.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=g))
    embeds = torch.randn(2 * world, 5, model.llm.config.hidden_size, generator=g).bfloat16()
    reference = copy.deepcopy(model.llm)
    ref_grads: dict[str, torch.Tensor] = {}
    for part in embeds.chunk(world):  # the unsharded LLM, rank by rank, averaged
        reference.zero_grad()
        reference(inputs_embeds=part).logits.float().pow(2).mean().backward()
        for n, p in reference.named_parameters():
            if p.grad is not None:
                ref_grads[n] = ref_grads.get(n, 0) + p.grad.float() / world

    mesh = init_device_mesh("cpu", (world,))
    llm_units = [u for u in model.shard_units() if any(u is m for m in model.llm.modules())]
    for unit in llm_units:
        fully_shard(unit, mesh=mesh)
    fully_shard(model.llm, mesh=mesh)
    mine = embeds.chunk(world)[rank]
    model.llm(inputs_embeds=mine).logits.float().pow(2).mean().backward()
    diffs, dtypes = [], {}
    for n, p in model.llm.named_parameters():
        kind = "adapter" if ".lora_" in n else "base"
        dtypes.setdefault(kind, set()).add(str(p.dtype))
        if p.grad is not None:
            assert kind == "adapter", n
            want = ref_grads[n]
            diffs.append(float((p.grad.full_tensor().float() - want).abs().max()
                               / want.abs().max().clamp(min=1e-30)))
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump({"adapters_with_grads": len(diffs), "expected": len(ref_grads),
                       "max_rel_diff": max(diffs), "dtypes": {k: sorted(v) for k, v in dtypes.items()}},
                      f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])

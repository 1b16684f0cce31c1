"""Trainable parameters and AdamW state with and without LoRA on the LLM, on a CPU.

Two scales:
- `tiny_vicuna`, the whole model: one real training step (forward, backward, AdamW step
  through `lavis_ib.runners.optim.build_optimizer`) without and with `llm_lora`.
- Vicuna-7B-shaped InstructBLIP: the Q-Former side (query tokens, Q-Former with
  InstructBLIP's default sizes, `ln_vision`, projection to 4096) is built for real; the
  LLM (LLaMA, 4096 hidden, 32 layers, 32,000 vocab) on the meta device, so its adapters'
  shapes come from peft's own injection without 13 GB of weights. One AdamW step runs
  over real fp32 tensors of every trainable shape.

Optimizer state is the sum of the AdamW state tensors' bytes after the step (exact), and
the growth of the process's resident memory across that first step (measured, includes
allocator slack; each row runs in a fresh process, so no row reuses memory another freed).
The script checks that the adapters add exactly r x (in + out) parameters per wrapped
layer and ends with a `summary:` line. Usage: `HF_HUB_OFFLINE=1 python
bench/lora_memory.py [--r 8] [--smoke]` (`--smoke`: the tiny rows only, for the tests).
"""
from __future__ import annotations

import argparse
import gc

import torch
from torch import nn


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def adamw_step(named: list[tuple[str, nn.Parameter]]) -> tuple[int, int]:
    """(AdamW state bytes, resident-memory growth) of a first step over `named`."""
    from types import SimpleNamespace

    from lavis_ib.runners.optim import build_optimizer

    run = SimpleNamespace(weight_decay=0.05, init_lr=1e-5, beta2=0.999)
    opt = build_optimizer(named, run)
    for _, p in named:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    gc.collect()
    before = rss_bytes()
    opt.step()
    grown = rss_bytes() - before
    state = sum(t.numel() * t.element_size() for s in opt.state.values()
                for t in s.values() if torch.is_tensor(t) and t.dim() > 0)
    return state, grown


def tiny(r: int, with_lora: bool) -> tuple[str, int, int, int]:
    from lavis_ib import load_model

    lora = {"r": r, "alpha": 2 * r} if with_lora else None
    model = load_model("instructblip", "tiny_vicuna", llm_lora=lora)
    model.train()
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(2, 3, 32, 32, generator=g),
             "text_input": ["what is this?", "count"], "text_output": ["a cat", "3"]}
    model(batch)["loss_sum"].backward()
    named = list(model.trainable_parameters())
    state, grown = adamw_step(named)
    return ("tiny_vicuna" + (f" + LoRA r={r}" if lora else ""),
            sum(p.numel() for _, p in named), state, grown)


def vicuna7b_shapes(r: int) -> tuple[dict[str, torch.Size], dict[str, torch.Size]]:
    """({name: shape} of the Q-Former side, {name: shape} of the LoRA adapters)."""
    from peft import LoraConfig, inject_adapter_in_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from lavis_ib.models.llm.lora import DEFAULT_TARGETS, is_adapter_parameter
    from lavis_ib.models.components.qformer import QFormer, QFormerSpec

    with torch.device("meta"):
        side = nn.ModuleDict({"qformer": QFormer(QFormerSpec(), text_input=True),
                              "ln_vision": nn.LayerNorm(1408), "llm_proj": nn.Linear(768, 4096)})
        llm = LlamaForCausalLM(LlamaConfig(vocab_size=32001, hidden_size=4096,
                                           intermediate_size=11008, num_hidden_layers=32,
                                           num_attention_heads=32))
    qformer_side = {n: p.shape for n, p in side.named_parameters()}
    qformer_side["query_tokens"] = torch.Size([1, 32, 768])
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=DEFAULT_TARGETS["llama"])
    inject_adapter_in_model(config, llm)
    adapters = {n: p.shape for n, p in llm.named_parameters() if is_adapter_parameter(n)}
    return qformer_side, adapters


def vicuna7b(r: int, with_lora: bool) -> tuple[str, int, int, int]:
    side, adapters = vicuna7b_shapes(r)
    shapes = {**side, **adapters} if with_lora else side
    named = [(n, nn.Parameter(torch.zeros(s))) for n, s in shapes.items()]
    state, grown = adamw_step(named)
    label = "Vicuna-7B InstructBLIP" + (f" + LoRA r={r}" if with_lora else "")
    return label, sum(p.numel() for _, p in named), state, grown


ROWS = [(tiny, False), (tiny, True), (vicuna7b, False), (vicuna7b, True)]
#: (in + out) of every wrapped layer: tiny_vicuna (2 layers; q_proj and v_proj 64->64) and
#: Vicuna-7B (32 layers; q_proj and v_proj 4096->4096)
WRAPPED = {"tiny_vicuna": [64 + 64] * 2 * 2, "Vicuna-7B": [4096 + 4096] * 2 * 32}


def main() -> None:
    import subprocess
    import sys

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--smoke", action="store_true", help="the tiny rows only")
    parser.add_argument("--row", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row is not None:
        label, params, state, grown = ROWS[args.row][0](args.r, ROWS[args.row][1])
        print(f"| {label} | {params:,} | {state / 2**20:,.1f} MiB | {grown / 2**20:,.1f} MiB |")
        return
    print("| model | trainable parameters | AdamW state (exact) | RSS growth of the first step |")
    print("|---|---|---|---|")
    cells = []
    for row in range(2 if args.smoke else len(ROWS)):
        if args.smoke:  # in this process: quicker, the RSS column is then only indicative
            label, params, state, grown = ROWS[row][0](args.r, ROWS[row][1])
            line = f"| {label} | {params:,} | {state / 2**20:,.1f} MiB | {grown / 2**20:,.1f} MiB |"
        else:
            cmd = [sys.executable, __file__, "--r", str(args.r), "--row", str(row)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            line = out.strip().splitlines()[-1]
        print(line)
        cells.append([c.strip() for c in line.strip("|").split("|")])
    for (base, lora), model in zip([cells[i:i + 2] for i in range(0, len(cells), 2)], WRAPPED):
        added = int(lora[1].replace(",", "")) - int(base[1].replace(",", ""))
        expected = args.r * sum(WRAPPED[model])
        assert added == expected, f"{model}: LoRA added {added} parameters, expected {expected}"
        state = (float(lora[2].split()[0].replace(",", ""))
                 - float(base[2].split()[0].replace(",", "")))
        print(f"summary: {model}: LoRA r={args.r} adds {added:,} trainable parameters "
              f"(+{100 * added / int(base[1].replace(',', '')):.1f} %), AdamW state "
              f"+{state:,.1f} MiB")


if __name__ == "__main__":
    main()

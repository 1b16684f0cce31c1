"""The quantisation stages of `bench/gpu.py`: the frozen LLM quantised in place by
`lavis_ib`'s own `quantize_llm` (`model.llm_quantization`), its weight memory and the GPU
memory it holds measured, one greedy generate call timed, then the unquantised LLM put
back for the next mode.

``quant_<mode>`` prints: LLM weight bytes before -> after (counted from the tensors,
quantised layouts included), the GPU memory the LLM holds before -> after (allocated with
the LLM on the GPU minus allocated with it on the CPU; "n/a" on CPU), the generate stage's
tokens/s line and the share of greedy tokens equal to the unquantised model's.

`int8` / `nf4` need CUDA and bitsandbytes: without them the stage says so and is skipped.
"""
from __future__ import annotations

import gc
import importlib.util

import torch
from torch import nn

MODES = ("int8_weight_only", "int8", "nf4")


class Skip(Exception):
    """The stage cannot run on this machine (reason in the message)."""


def _saved_linears(llm: nn.Module, names: list[str]) -> dict[str, tuple]:
    """(weight, bias) of each named linear layer, copied to the CPU."""
    out = {}
    for name in names:
        layer = llm.get_submodule(name)
        bias = None if layer.bias is None else layer.bias.detach().to("cpu", copy=True)
        out[name] = (layer.weight.detach().to("cpu", copy=True), bias)
    return out


def _restore_linears(llm: nn.Module, saved: dict[str, tuple], device: torch.device) -> None:
    """Plain `nn.Linear` layers holding the saved weights, in place of the quantised ones."""
    for name, (weight, bias) in saved.items():
        parent_name, _, attr = name.rpartition(".")
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
        layer.weight = nn.Parameter(weight.to(device), requires_grad=False)
        if bias is not None:
            layer.bias = nn.Parameter(bias.to(device), requires_grad=False)
        setattr(llm.get_submodule(parent_name) if parent_name else llm, attr, layer)


def _allocated(bench) -> int | None:
    if not bench.cuda:
        return None
    gc.collect()
    torch.cuda.empty_cache()
    return torch.cuda.memory_allocated(bench.device)


def _size(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 2 ** 30:.2f} GiB" if value >= 2 ** 30 else f"{value / 2 ** 20:.2f} MiB"


def quantization_stage(bench, mode: str) -> str:
    """Quantise the bench model's LLM with `mode`, measure, generate, restore."""
    from lavis_ib.models.llm import quantization as lq

    if mode in ("int8", "nf4"):
        if not bench.cuda:
            raise Skip(f"{mode} needs CUDA (bitsandbytes)")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise Skip(f"{mode} needs bitsandbytes: pip install 'lavis_ib[quantization]'")
    model = bench.model
    llm = model.llm
    names = lq.quantized_linear_names(llm)
    saved = _saved_linears(llm, names)
    reference = _greedy_ids(bench)
    before_bytes, with_llm = lq.weight_bytes(llm), _allocated(bench)
    llm.to("cpu")    # bitsandbytes quantises on the move from the CPU; the baseline without it
    without_llm = _allocated(bench)
    if mode == "int8_weight_only":
        llm.to(bench.device)
    try:
        report = lq.quantize_llm(model, mode)
        llm.to(bench.device)
        with_quantised = _allocated(bench)
        generate = bench.generate(1, f"quant_{mode}")
        same = (_greedy_ids(bench) == reference).float().mean().item()
    finally:
        _restore_linears(llm, saved, bench.device)
        llm.to(bench.device)
        model.load_report.pop("llm_quantization", None)
    if any(type(llm.get_submodule(n).weight) is not nn.Parameter for n in names):
        raise RuntimeError("the unquantised LLM was not restored; later stages would be wrong")
    before_gpu, after_gpu = ((None, None) if without_llm is None else
                             (with_llm - without_llm, with_quantised - without_llm))
    after_bytes = report["llm_weight_bytes_after"]
    bench.summary[f"quant_{mode}"] = f"LLM {after_bytes / before_bytes:.2f}x"
    return (f"{report['quantized_linear_layers']} linear layers; LLM weights "
            f"{_size(before_bytes)} -> {_size(after_bytes)} ({after_bytes / before_bytes:.2f}x); "
            f"GPU memory of the LLM {_size(before_gpu)} -> {_size(after_gpu)}; generate: {generate}; "
            f"greedy tokens equal to unquantised {same:.0%}")


def _greedy_ids(bench) -> torch.Tensor:
    """Greedy token ids of a fixed batch (the agreement check against the unquantised LLM)."""
    model, spec = bench.model, bench.spec
    size = model.vision_spec.image_size
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3)).to(bench.device)
    model.eval()
    try:
        with torch.no_grad(), bench.autocast():
            prefix = model.encode(images, ["describe the image"] * 2)
            out = model.llm.generate(inputs_embeds=prefix, attention_mask=torch.ones(
                prefix.shape[:2], dtype=torch.long, device=prefix.device), do_sample=False,
                max_new_tokens=spec["new_tokens"], min_new_tokens=spec["new_tokens"])
    finally:
        model.train()
    return out.cpu()

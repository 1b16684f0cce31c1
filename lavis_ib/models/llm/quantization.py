"""Quantised loading of the frozen LLM (`model.llm_quantization`).

The LLM is the bulk of an InstructBLIP model's memory and never trains, so its linear layers
can hold quantised weights while the Q-Former path trains in fp32; docs/quantization.md
gives the modes, the layers kept and the measurements (`quantize_llm`)."""
from __future__ import annotations

import importlib.util
import logging
from typing import Any, Mapping

import torch
from torch import nn

from lavis_ib.common.errors import ConfigError
from lavis_ib.common.precision import DTYPES, resolve_precision

logger = logging.getLogger(__name__)

MODES = ("none", "int8", "nf4", "int8_weight_only")
TORCHAO_MIN_VERSION = "0.15"
INSTALL_HINT = "pip install 'lavis_ib[quantization]'"


def quantization_problems(model: Mapping[str, Any], run: Mapping[str, Any] | None) -> list[str]:
    """Every problem of `model.llm_quantization` with this environment and run, one line
    each, before anything is built."""
    mode = model.get("llm_quantization") or "none"
    if mode not in MODES:
        return [f"model.llm_quantization: '{mode}' is not one of {', '.join(MODES)}."]
    if mode == "none":
        return []
    run = run or {}
    problems = _environment_problems(mode, str(run.get("device") or "auto"))
    problems += _precision_problems(mode, model.get("llm_precision") or "fp32",
                                    str(run.get("device") or "auto"))
    distributed = run.get("distributed") or "none"
    if distributed == "fsdp":
        problems.append(f"model.llm_quantization: '{mode}' cannot be used with "
                        "run.distributed=fsdp (FSDP2 cannot shard quantised weight tensors); "
                        "use run.distributed=ddp, or llm_quantization=none.")
    return problems


def _environment_problems(mode: str, device: str) -> list[str]:
    """What this machine lacks for `mode` (a library, CUDA)."""
    if mode == "int8_weight_only":
        return _torchao_problems()
    out = []
    if device == "cpu" or not torch.cuda.is_available():
        where = "run.device is cpu" if device == "cpu" else "no CUDA device is visible"
        out.append(f"model.llm_quantization: '{mode}' needs bitsandbytes on a CUDA GPU but "
                   f"{where}; on CPU use llm_quantization=int8_weight_only.")
    if importlib.util.find_spec("bitsandbytes") is None:
        out.append(f"model.llm_quantization: '{mode}' needs bitsandbytes, which is not "
                   f"installed; {INSTALL_HINT} (Linux with CUDA).")
    return out


def _precision_problems(mode: str, precision: Any, device: str) -> list[str]:
    """LLM.int8 computes in fp16: with an fp32 LLM it would cast activations silently."""
    if mode == "int8" and _name_on(precision, device) == "fp32":
        return ["model.llm_quantization: 'int8' (LLM.int8) computes in fp16 and would cast "
                "the fp32 LLM's activations silently; set model.llm_precision=bf16 or fp16."]
    return []


def _name_on(precision: Any, device: str) -> Any:
    """The precision name on `device` (a per-device mapping takes its entry); a value that
    is not a precision is left to the model config's own check."""
    try:
        return resolve_precision(precision, device)
    except ConfigError:
        return precision


def _torchao_problems() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    try:
        found = version("torchao")
    except PackageNotFoundError:
        return [f"model.llm_quantization: 'int8_weight_only' needs torchao>="
                f"{TORCHAO_MIN_VERSION}, which is not installed; {INSTALL_HINT}."]
    if Version(found) < Version(TORCHAO_MIN_VERSION):
        return [f"model.llm_quantization: 'int8_weight_only' needs torchao>="
                f"{TORCHAO_MIN_VERSION}; found {found}; {INSTALL_HINT}."]
    return []


def quantized_linear_names(llm: nn.Module) -> list[str]:
    """Names (inside `llm`) of the linear layers to quantise: all but the output head, any
    layer sharing its weight with an embedding table (tied weights), and the layers the
    model class keeps in fp32 (`_keep_in_fp32_modules`, e.g. T5's `wo`).

    The head's logits are what ranking sums and generation samples from; transformers' own
    quantisers skip the head and the fp32 layers the same way. Embeddings are table
    lookups, not matmuls.
    """
    head = llm.get_output_embeddings()
    embedding_storage = {m.weight.data_ptr() for m in llm.modules() if isinstance(m, nn.Embedding)}
    fp32_names = {*(getattr(llm, "_keep_in_fp32_modules", None) or []),
                  *(getattr(llm, "_keep_in_fp32_modules_strict", None) or [])}
    return [name for name, module in llm.named_modules()
            if isinstance(module, nn.Linear) and module is not head
            and module.weight.data_ptr() not in embedding_storage
            and not fp32_names & set(name.split("."))]


def weight_bytes(module: nn.Module) -> int:
    """Bytes held by `module`'s parameters and buffers, counting the inner tensors of
    quantised tensor subclasses (int8 data + scales), not their logical dtype."""
    seen: set[int] = set()
    total = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += _storage_bytes(tensor)
    return total


def is_quantized(tensor: torch.Tensor) -> bool:
    """Whether `tensor` is a quantised tensor subclass (torchao's int8 weights: their
    logical dtype hides the int8 data and scales they hold)."""
    return type(tensor) not in (torch.Tensor, nn.Parameter) and hasattr(tensor, "__tensor_flatten__")


def _storage_bytes(tensor: torch.Tensor) -> int:
    if is_quantized(tensor):
        names, _ = tensor.__tensor_flatten__()
        return sum(_storage_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def quantize_llm(model: Any, mode: str) -> dict[str, Any]:
    """Quantise `model.llm` in place; returns (and stores in `model.load_report`) what was
    done: mode, quantised layer count and names, layers kept, weight bytes before/after.

    - `int8_weight_only`: torchao's `Int8WeightOnlyConfig` through `torchao.quantize_` (int8
      weights with one scale per output channel, dequantised to `llm_precision` in each
      matmul). Runs on CPU and GPU.
    - `int8` (LLM.int8 with outlier columns in fp16) and `nf4` (4-bit NormalFloat): the
      linear layers are swapped for bitsandbytes' `Linear8bitLt` / `Linear4bit`, whose
      weights are quantised when they move to CUDA, which happens here. CUDA and
      bitsandbytes only.

    Raises:
        ConfigError: an unknown mode, or a library / CUDA the mode needs is missing.
    """
    if mode not in MODES:
        raise ConfigError(f"model.llm_quantization: '{mode}' is not one of {', '.join(MODES)}.")
    llm = model.llm
    dtype = next(llm.parameters()).dtype
    precision = next((name for name, d in DTYPES.items() if d == dtype), "fp32")
    problems = [*_environment_problems(mode, "auto"), *_precision_problems(mode, precision, "auto")]
    if problems:
        raise ConfigError(" ".join(problems))
    names = quantized_linear_names(llm)
    targets = set(names)
    if not names:
        raise ConfigError(f"model.llm_quantization: '{mode}' found no linear layer to quantise "
                          f"in the LLM ({type(llm).__name__}); use llm_quantization=none.")
    before = weight_bytes(llm)
    if mode == "int8_weight_only":
        _torchao_int8_weight_only(llm, targets)
    else:
        _swap_to_bitsandbytes(llm, names, mode)
    # Frozen, identical on every rank: DDP must not broadcast them (it cannot view
    # quantised tensors), so they are listed in the attribute DDP reads.
    model._ddp_params_and_buffers_to_ignore = [
        f"llm.{n}" for n, _ in llm.named_parameters() if n.rsplit(".", 1)[0] in targets]
    kept = [n for n, m in llm.named_modules() if isinstance(m, nn.Linear) and n not in targets]
    report = {"mode": mode, "quantized_linear_layers": len(names), "kept_linear_layers": kept,
              "llm_weight_bytes_before": before, "llm_weight_bytes_after": weight_bytes(llm)}
    model.load_report = {**(getattr(model, "load_report", None) or {}), "llm_quantization": report}
    logger.info("llm_quantization=%s: %d linear layers of the LLM quantised (%s ... %s); kept "
                "unquantised: %s; LLM weights %.2f MiB -> %.2f MiB", mode, len(names), names[0],
                names[-1], ", ".join(kept) or "none", before / 2**20, report["llm_weight_bytes_after"] / 2**20)
    return report


def _torchao_int8_weight_only(llm: nn.Module, names: set[str]) -> None:
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    quantize_(llm, Int8WeightOnlyConfig(), filter_fn=lambda module, fqn: fqn in names)
    left = [n for n, m in llm.named_modules() if n in names and type(m.weight) is nn.Parameter]
    if left:
        raise ConfigError(f"model.llm_quantization: torchao left {len(left)} layers unquantised "
                          f"({left[0]}, ...); check the torchao version ({INSTALL_HINT}).")


def _swap_to_bitsandbytes(llm: nn.Module, names: list[str], mode: str) -> None:
    """Replace the layers by bitsandbytes ones holding the same weights (on the CPU: its
    parameters quantise on a move from the CPU to CUDA), then move the LLM to CUDA, where
    bitsandbytes quantises them (int8 row-wise with fp16 outliers, or nf4 blocks computing
    in the LLM's dtype). The rest of the model follows when the loader or runner moves it."""
    import bitsandbytes as bnb

    compute_dtype = next(llm.parameters()).dtype
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = llm.get_submodule(parent_name) if parent_name else llm
        old = getattr(parent, attr)
        bias = old.bias is not None
        if mode == "int8":
            new = bnb.nn.Linear8bitLt(old.in_features, old.out_features, bias=bias,
                                      has_fp16_weights=False, threshold=6.0)
            new.weight = bnb.nn.Int8Params(old.weight.data.to("cpu"), requires_grad=False,
                                           has_fp16_weights=False)
        else:
            new = bnb.nn.Linear4bit(old.in_features, old.out_features, bias=bias,
                                    compute_dtype=compute_dtype, quant_type="nf4")
            new.weight = bnb.nn.Params4bit(old.weight.data.to("cpu"), requires_grad=False,
                                           quant_type="nf4")
        if bias:
            new.bias = nn.Parameter(old.bias.data, requires_grad=False)
        setattr(parent, attr, new)
    llm.to(torch.device("cuda", torch.cuda.current_device()))

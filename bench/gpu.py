"""One-GPU benchmark of a Vicuna-7B-shaped InstructBLIP with random weights (no download).

The real architecture (EVA ViT-g/14 minus its last block, the 32-query Q-Former, LLaMA-7B
with 32,001 tokens) is built on the meta device and materialised on the GPU with random
weights: ViT and LLM bf16 and frozen, the trainable parts fp32 under bf16 autocast (what
`run.amp: bf16` does). Stages, each printing one ``stage <name>: ...`` line as it ends:

* ``build``: parameter counts and build time.
* ``train_b{8,16}_ckpt_{off,on}``: forward + backward + fused AdamW on the trainable parts;
  samples/s, achieved TFLOP/s, MFU and peak memory; activation checkpointing of the LLM
  blocks (`model.checkpoint_units()`) through the runner's own
  `lavis_ib.runners.strategies.apply_activation_checkpointing`.
* ``generate_greedy``, ``generate_beam5``: tokens/s (every sequence forced to the same
  number of new tokens).
* ``quant_int8_weight_only``, ``quant_int8``, ``quant_nf4`` (bench/gpu_quant.py): the LLM
  quantised by `model.llm_quantization`'s own code, its weight and GPU memory before and
  after, a greedy generate call's tokens/s and the greedy tokens' agreement with the
  unquantised LLM; int8 / nf4 are skipped without CUDA or bitsandbytes.
* ``packing_{sdpa,flex_attention,flash_attention_2}``: a training step on a batch of
  mixed lengths (short VQA answers to long LLaVA-style answers), padded against packed
  (`run.packing`: sequences end to end, position ids restarting, no padding) with the LLM on
  that attention kernel: speed-up, LLM positions of each, loss agreement. SDPA computes
  every packed row's full square with a mask; flex_attention skips the blocks across
  sequences (GPU only: on a CPU it would compile C++ kernels for minutes, so it is skipped);
  flash_attention_2 only where the flash-attn package is installed (else skipped).
* ``ranking``: `score_candidates` (image, Q-Former and prompt cache once per sample) against
  LAVIS's procedure (prompt + candidate for every candidate in one batched forward, logits
  over all positions): speed-up and score agreement.

A stage that runs out of GPU memory prints ``OOM``, frees memory and the next stage runs;
a stage that would start too close to the end of the time budget (default 200 s) prints ``skipped``.

FLOPs per sample (multiply-add = 2 FLOPs; attention scores counted over the full square, as
in PaLM's MFU; activation-checkpointing recomputation not counted)::

    ViT    (frozen, forward only)          F_vit
    Q-Former + projection (trained)      3 x F_qformer   (forward, input and weight grads)
    LLM    (frozen: activation grads only) 2 x F_llm_linear + 3 x F_llm_attention
    with F_linear = 2 x tokens x in x out per matrix, F_attention = 4 x L_q x L_k x width.
    The LM head counts the last max(target length) + 1 positions only: lavis_ib computes
    logits there and nowhere else. Packed micro-batches (`run.packing`, on by default for
    LLaMA) count their rows instead: rows x row length positions, each row's full
    attention square, the LM head over the target columns of the rows.

MFU = achieved FLOP/s / peak dense bf16 FLOP/s of the GPU (H100 SXM and H200: 989 TFLOP/s;
H100 PCIe 756; A100 312; other GPUs: pass --peak-tflops).

    python3 bench/gpu.py            # on the GPU machine (torch 2.11, transformers 5.17)
    python3 bench/gpu.py --sample-dropout   # training batches carry the runner's per-sample
                                            # dropout keys (docs/determinism.md): compare ms/step
    python bench/gpu.py --smoke     # tiny config on CPU, seconds (the test suite runs it)

Imports only torch, transformers, timm and lavis_ib's model modules (no omegaconf, iopath
or webdataset: the GPU machine lacks them; tests/bench/test_gpu_smoke.py checks it).
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import time

import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def _bench_module(name: str):
    """A sibling module of this script (the test suite runs it through runpy, with another
    sys.path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        name, os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_quant = _bench_module("gpu_quant")
MODES, Skip, quantization_stage = _quant.MODES, _quant.Skip, _quant.quantization_stage
PACKING_KERNELS = ("sdpa", "flex_attention", "flash_attention_2")
PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("H800", 989.0),
               ("A100", 312.0), ("L40S", 362.0))

SPECS = {
    "real": dict(
        vision=dict(),  # VisionSpec defaults: EVA ViT-g/14 at 224 px, 39 blocks
        qformer=dict(),  # QFormerSpec defaults: 768 wide, 12 layers, BERT vocabulary
        llm=dict(model_type="llama", vocab_size=32001, hidden_size=4096, intermediate_size=11008,
                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                 max_position_embeddings=2048, rms_norm_eps=1e-6, bos_token_id=1,
                 eos_token_id=2, pad_token_id=3, tie_word_embeddings=False),
        queries=32, batches=(8, 16), prompt_tokens=48, target_tokens=32, new_tokens=32,
        rank_batch=8, rank_candidates=16, rank_prompt_tokens=100, warmup=2, steps=5,
        mixed=dict(prompt_tokens=(20, 48, 35, 120, 60, 25, 90, 40),
                   target_tokens=(3, 12, 150, 1, 40, 8, 250, 20))),
    "smoke": dict(
        vision=dict(image_size=28, patch_size=14, hidden_size=32, intermediate_size=64,
                    num_hidden_layers=1, num_attention_heads=2),
        qformer=dict(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=48, max_position_embeddings=128, encoder_hidden_size=32),
        llm=dict(model_type="llama", vocab_size=300, hidden_size=32, intermediate_size=64,
                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                 max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=3,
                 tie_word_embeddings=False),
        queries=4, batches=(2, 4), prompt_tokens=12, target_tokens=6, new_tokens=4,
        rank_batch=2, rank_candidates=4, rank_prompt_tokens=20, warmup=1, steps=1,
        mixed=dict(prompt_tokens=(6, 14, 9, 20), target_tokens=(2, 9, 30, 4))),
}


class Budget:
    """The global time budget: stages start only while enough of it is left."""

    def __init__(self, seconds: float) -> None:
        self.start, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)


def say(line: str) -> None:
    print(line, flush=True)


# -- building ----------------------------------------------------------------------------
def build_model(spec: dict, device: torch.device, dtype: torch.dtype):
    """InstructBLIP of `spec` built on the meta device, then materialised on `device` with
    random weights (normal(0, 0.02) matrices, unit norms, zero biases)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from lavis_ib.models.weights.tokenizers import load_tokenizer, qformer_tokenizer_from
    from lavis_ib.models.instructblip import InstructBLIP
    from lavis_ib.models.components.qformer import QFormerSpec
    from lavis_ib.models.components.vision import VisionSpec

    precision = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype]
    llm_cfg = dict(spec["llm"])
    config = AutoConfig.for_model(llm_cfg.pop("model_type"), **llm_cfg)
    vision = VisionSpec(**spec["vision"])
    qformer = QFormerSpec(**{"encoder_hidden_size": vision.hidden_size, **spec["qformer"]})
    tok = load_tokenizer("assets/tiny_llama_tokenizer", "llm_tokenizer")
    qtok = qformer_tokenizer_from("assets/tiny_bert_tokenizer")
    with torch.device("meta"):
        llm = AutoModelForCausalLM.from_config(config)
        model = InstructBLIP(vision, qformer, llm, tok, qtok, num_query_token=spec["queries"],
                             max_txt_len=256, max_output_txt_len=256, vit_precision=precision,
                             llm_precision=precision)
    materialise(model, device)
    return model


def materialise(model: nn.Module, device: torch.device) -> None:
    """Allocate `model`'s meta tensors on `device`, fill them, rebuild computed buffers."""
    buffers = [n for n, _ in model.named_buffers()]
    model.to_empty(device=device)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif param.dim() == 1:  # LayerNorm / RMSNorm weights
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02)
    # Rotary embeddings hold computed (non-persistent) buffers: rebuild them on the device.
    rebuilt = []
    for name, module in list(model.named_modules()):
        if hasattr(module, "inv_freq") and hasattr(module, "config"):
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            with torch.device(device):
                setattr(parent, name.rsplit(".", 1)[-1], type(module)(module.config))
            rebuilt.append(name + ".")
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith(".k_bias"):  # timm EVA: the key bias is a fixed zero buffer
                buf.zero_()
                rebuilt.append(name)
    unknown = [n for n in buffers if not n.startswith(tuple(rebuilt))]
    if unknown:  # an uninitialised buffer would silently corrupt the results
        raise RuntimeError(f"materialise: no recipe for the computed buffers {unknown[:5]}")
    model.configure_trainable()


# -- inputs and FLOPs ------------------------------------------------------------------
def text_of(n_tokens: int, seed: int) -> str:
    """A lowercase 'word' of about `n_tokens` tokens for the character-level tokenizers."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return "".join(letters[(seed * 7 + i * 3) % 26] for i in range(max(1, n_tokens - 1)))


def train_batch(spec: dict, model, n: int, device, sample_dropout: bool = False) -> dict:
    size = model.vision_spec.image_size
    g = torch.Generator().manual_seed(n)
    samples = {"image": torch.randn(n, 3, size, size, generator=g).to(device),
               "text_input": [text_of(spec["prompt_tokens"], i) for i in range(n)],
               "text_output": [text_of(spec["target_tokens"], i + 100) for i in range(n)]}
    if sample_dropout:   # what the runner's loader adds: one dropout key per sample
        from lavis_ib.common.dropout_keys import FIELD, dropout_keys

        samples[FIELD] = dropout_keys(0, 0, range(n)).to(device)
    return samples


def _linear(tokens: float, *shapes: tuple[int, int]) -> float:
    return sum(2.0 * tokens * a * b for a, b in shapes)


def flops_per_step(model, samples: dict) -> float:
    """Model FLOPs of one training step on `samples` (see the module docstring)."""
    v, q = model.vision_spec, model.qformer_spec
    cfg = model.llm.config
    n = len(samples["text_input"])
    n_img = (v.image_size // v.patch_size) ** 2 + 1
    vit = v.num_hidden_layers * (_linear(n_img, (v.hidden_size, 3 * v.hidden_size),
                                         (v.hidden_size, v.hidden_size),
                                         (v.hidden_size, v.intermediate_size),
                                         (v.intermediate_size, v.hidden_size))
                                 + 4.0 * n_img * n_img * v.hidden_size)
    vit += _linear(n_img - 1, (3 * v.patch_size ** 2, v.hidden_size))
    nq = model.query_tokens.shape[1]
    lt = model._qformer_tokens(samples["text_input"])[0].shape[1] if model.qformer_text_input else 0
    s, d, f = nq + lt, q.hidden_size, q.intermediate_size
    qf = 0.0
    for i in range(q.num_hidden_layers):
        qf += _linear(s, (d, d), (d, d), (d, d), (d, d)) + 4.0 * s * s * d
        if i % q.cross_attention_frequency == 0:
            qf += _linear(nq, (d, d), (d, d)) + _linear(n_img, (q.encoder_hidden_size, d),
                                                        (q.encoder_hidden_size, d))
            qf += 4.0 * nq * n_img * d
        qf += _linear(nq, (d, f), (f, d)) + _linear(lt, (d, f), (f, d))
    dl = cfg.hidden_size
    qf += _linear(nq, (d, dl))
    prompts = model.adapter.tokenize_prompts(samples["text_input"])
    targets = model.adapter.tokenize_targets(samples["text_output"])
    kv = cfg.num_key_value_heads * (dl // cfg.num_attention_heads)
    ff = cfg.intermediate_size
    layer = ((dl, dl), (dl, kv), (dl, kv), (dl, dl), (dl, ff), (dl, ff), (ff, dl))
    rows, width, head = llm_layout(model, prompts, targets)
    lin = cfg.num_hidden_layers * rows * _linear(width, *layer)
    lin += rows * _linear(head, (dl, cfg.vocab_size))
    att = cfg.num_hidden_layers * rows * 4.0 * width * width * dl
    return n * (vit + 3.0 * qf) + 2.0 * lin + 3.0 * att


def llm_layout(model, prompts, targets) -> tuple[int, int, int]:
    """(rows, row length, LM-head positions per row) of the LLM call of a training step:
    padded, the batch's rows, its longest sequence, the last max(target length) + 1
    positions; packed (`adapter.packs()`), the packed rows, the widest one, the union of
    their target columns."""
    from lavis_ib.models.llm.packing import plan_rows

    nq = model.query_tokens.shape[1]
    lengths = [nq + len(a) + len(t) for a, t in zip(prompts, targets)]
    if not model.adapter.packs():
        return len(lengths), max(lengths), max(len(t) for t in targets) + 1
    plan = plan_rows(lengths, model.adapter.row_tokens)
    columns = set()
    for row in plan:
        offset = 0
        for i in row:
            start = offset + nq + len(prompts[i]) - 1
            columns.update(range(start, start + len(targets[i])))
            offset += lengths[i]
    return len(plan), max(sum(lengths[i] for i in row) for row in plan), len(columns)


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for key, v in PEAK_TFLOPS if key in name), None)


# -- stages ------------------------------------------------------------------------------
class Bench:
    def __init__(self, args, spec: dict, device: torch.device, dtype: torch.dtype) -> None:
        self.args, self.spec, self.device, self.dtype = args, spec, device, dtype
        self.cuda = device.type == "cuda"
        self.model = None
        self.optimizer = None
        self.results: dict[str, str] = {}
        self.summary: dict[str, str] = {}

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.cuda)

    def free(self) -> None:
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def peak_gib(self) -> str:
        if not self.cuda:
            return "peak n/a on CPU"
        return f"peak {torch.cuda.max_memory_allocated(self.device) / 2 ** 30:.1f} GiB"

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def maybe_fail(self, stage: str) -> None:
        if stage in (self.args.simulate_oom or []):
            raise OOM(f"simulated out of memory in stage {stage}")

    # build
    def build(self) -> str:
        start = time.perf_counter()
        self.model = build_model(self.spec, self.device, self.dtype)
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        kwargs = {"fused": True} if self.cuda else {}
        self.optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.05, **kwargs)
        self.sync()
        count = lambda mod: sum(p.numel() for p in mod.parameters()) / 1e6  # noqa: E731
        memory = (f", {torch.cuda.memory_allocated(self.device) / 2 ** 30:.1f} GiB allocated"
                  if self.cuda else "")
        return (f"ViT {count(self.model.visual_encoder):.1f}M, Q-Former "
                f"{count(self.model.qformer):.1f}M, LLM {count(self.model.llm):.1f}M params, "
                f"trainable {sum(p.numel() for p in params) / 1e6:.1f}M{memory}, "
                f"{time.perf_counter() - start:.1f} s")

    # training
    def train(self, n: int, stage: str) -> str:
        model, opt = self.model, self.optimizer
        samples = train_batch(self.spec, model, n, self.device, self.args.sample_dropout)

        def step():
            opt.zero_grad(set_to_none=True)
            with self.autocast():
                loss = model(samples)["loss"]
            loss.backward()
            opt.step()
            return loss

        self.reset_peak()
        for _ in range(self.spec["warmup"]):
            step()
        self.maybe_fail(stage)
        self.sync()
        start = time.perf_counter()
        for _ in range(self.spec["steps"]):
            loss = step()
        self.sync()
        seconds = (time.perf_counter() - start) / self.spec["steps"]
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"non-finite loss {loss.item()}")
        tflops = flops_per_step(model, samples) / seconds / 1e12
        peak = peak_tflops(self.device, self.args.peak_tflops)
        mfu = f"MFU {100 * tflops / peak:.1f}% of {peak:.0f}" if peak else "MFU n/a (unknown peak)"
        self.summary[stage] = f"{n / seconds:.1f}/s"
        opt.zero_grad(set_to_none=True)
        return (f"{n / seconds:.2f} samples/s, {seconds * 1e3:.0f} ms/step, "
                f"{tflops:.1f} TFLOP/s, {mfu}, {self.peak_gib()}, loss {loss.item():.3f}")

    # generation
    def generate(self, beams: int, stage: str) -> str:
        model, spec = self.model, self.spec
        n, new = spec["batches"][0], spec["new_tokens"]
        size = model.vision_spec.image_size
        g = torch.Generator().manual_seed(1)
        samples = {"image": torch.randn(n, 3, size, size, generator=g).to(self.device),
                   "prompt": [text_of(spec["prompt_tokens"], i) for i in range(n)]}
        kwargs = dict(num_beams=beams, max_length=new, min_length=new, repetition_penalty=1.0)
        model.eval()
        try:
            self.reset_peak()
            with self.autocast():
                model.generate(samples, **{**kwargs, "max_length": 2, "min_length": 2})  # warm-up
                self.maybe_fail(stage)
                self.sync()
                start = time.perf_counter()
                out = model.generate(samples, **kwargs)
                self.sync()
        finally:
            model.train()
        seconds = time.perf_counter() - start
        self.summary[stage] = f"{n * new / seconds:.0f} tok/s"
        return (f"{n * new / seconds:.1f} tokens/s (batch {n}, {new} new tokens, beams {beams}, "
                f"{seconds:.2f} s), {self.peak_gib()}, {len(out)} outputs")

    # ranking
    def lavis_scores(self, samples: dict, candidates: list[str]) -> torch.Tensor:
        """LAVIS's procedure: every (sample, candidate) sequence [prefix ; prompt ;
        candidate + EOS] in one batched forward, log-probs over all positions."""
        model = self.model
        adapter = model.adapter
        prefix = model.encode(samples["image"], samples["prompt"])
        prompts = adapter.tokenize_prompts(samples["prompt"])
        cand_ids = adapter.tokenize_targets(candidates)
        b, c = prefix.shape[0], len(candidates)
        rep_prefix = prefix.repeat_interleave(c, dim=0)
        rep_prompts = [p for p in prompts for _ in range(c)]
        rep_cands = cand_ids * b
        embeds, mask, labels = adapter._sequences(rep_prefix, rep_prompts, rep_cands, left=False)
        logits = model.llm(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        tgt = labels[:, 1:]
        token = logp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (tgt != -100)
        return token.sum(-1).view(b, c)

    def ranking(self, stage: str) -> str:
        model, spec = self.model, self.spec
        n, size = spec["rank_batch"], model.vision_spec.image_size
        letters = "abcdefghijklmnopqrstuvwxyz"
        candidates = [letters[i % 26] * (1 + i % 4) for i in range(spec["rank_candidates"])]
        g = torch.Generator().manual_seed(2)
        samples = {"image": torch.randn(n, 3, size, size, generator=g).to(self.device),
                   "prompt": [text_of(spec["rank_prompt_tokens"], i) for i in range(n)]}
        model.eval()
        times = {"ours": [], "lavis": []}
        try:
            with torch.no_grad(), self.autocast():
                ours = model.score_candidates(samples, candidates, append_eos=True)[0]
                ref = self.lavis_scores(samples, candidates)
                self.maybe_fail(stage)
                for r in range(3):
                    for side in (("ours", "lavis") if r % 2 == 0 else ("lavis", "ours")):
                        self.sync()
                        start = time.perf_counter()
                        if side == "ours":
                            model.score_candidates(samples, candidates, append_eos=True)
                        else:
                            self.lavis_scores(samples, candidates)
                        self.sync()
                        times[side].append(time.perf_counter() - start)
        finally:
            model.train()
        diff = (ours - ref).abs().max().item()
        agree = (ours.argmax(-1) == ref.argmax(-1)).float().mean().item()
        t_ours, t_lavis = statistics.median(times["ours"]), statistics.median(times["lavis"])
        self.summary[stage] = f"{t_lavis / t_ours:.1f}x"
        return (f"speedup {t_lavis / t_ours:.1f}x (ours {t_ours * 1e3:.0f} ms, LAVIS procedure "
                f"{t_lavis * 1e3:.0f} ms; batch {n}, {len(candidates)} candidates, "
                f"{spec['rank_prompt_tokens']}-token prompt), max |score diff| {diff:.3g}, "
                f"top-1 agreement {agree:.0%}")

    # packed vs padded micro-batches, per attention kernel
    def packing(self, kernel: str, stage: str) -> str:
        """A training step on `spec["mixed"]`'s lengths, padded vs packed, with the LLM on
        `kernel`; sides alternate, medians compared."""
        model, opt, spec = self.model, self.optimizer, self.spec
        if kernel == "flex_attention" and not self.cuda:
            raise Skip("flex_attention compiles its kernels (inductor): measured on a GPU only")
        if kernel == "flash_attention_2":
            import importlib.util

            if importlib.util.find_spec("flash_attn") is None:
                raise Skip("the flash-attn package is not installed")
        mixed = spec["mixed"]
        g = torch.Generator().manual_seed(3)
        size = model.vision_spec.image_size
        n = len(mixed["prompt_tokens"])
        samples = {"image": torch.randn(n, 3, size, size, generator=g).to(self.device),
                   "text_input": [text_of(p, i) for i, p in enumerate(mixed["prompt_tokens"])],
                   "text_output": [text_of(t, i + 50) for i, t in enumerate(mixed["target_tokens"])]}
        before = model.llm.config._attn_implementation
        model.llm.set_attn_implementation(kernel)
        try:
            if not model.adapter.set_packing("auto"):
                from lavis_ib.models.llm.packing import packs_exactly

                raise Skip(f"{kernel}: the family's packing self-check fails: "
                           f"{packs_exactly(model.llm)[1]}")

            def step(packing: str):
                model.adapter.set_packing(packing)
                opt.zero_grad(set_to_none=True)
                with self.autocast():
                    loss = model(samples)["loss"]
                loss.backward()
                opt.step()
                return loss.item(), model.adapter.last_llm_positions

            model.eval()   # no dropout: both sides compute the same loss
            losses = {}
            with torch.no_grad(), self.autocast():
                for side in ("false", "true"):
                    model.adapter.set_packing(side)
                    losses[side] = model(samples)["loss"].item()
            for side in ("false", "true"):   # warm-up
                step(side)
            self.maybe_fail(stage)
            times = {"false": [], "true": []}
            positions = {}
            for r in range(max(2, self.spec["steps"])):
                for side in (("false", "true") if r % 2 == 0 else ("true", "false")):
                    self.sync()
                    start = time.perf_counter()
                    positions[side] = step(side)[1]
                    self.sync()
                    times[side].append(time.perf_counter() - start)
        finally:
            model.train()
            model.adapter.set_packing("auto")
            model.llm.set_attn_implementation(before)
        padded, packed = statistics.median(times["false"]), statistics.median(times["true"])
        rel = abs(losses["true"] - losses["false"]) / abs(losses["false"])
        self.summary[stage] = f"{padded / packed:.2f}x"
        return (f"packed {padded / packed:.2f}x vs padded ({packed * 1e3:.0f} vs "
                f"{padded * 1e3:.0f} ms/step, batch {n} of mixed lengths), LLM positions "
                f"{positions['true']} vs {positions['false']}, loss relative diff {rel:.1e}, "
                f"{self.peak_gib()}")

    def run_stage(self, name: str, fn, budget: Budget, needs: float) -> None:
        if budget.left() < needs:
            self.results[name] = "skipped"
            say(f"stage {name}: skipped (time budget: {budget.left():.0f} s left, needs ~{needs:.0f} s)")
            return
        start = time.perf_counter()
        try:
            line = fn()
            self.results[name] = "ok"
            say(f"stage {name}: {line} [{time.perf_counter() - start:.1f} s]")
        except Skip as exc:
            self.results[name] = "skipped"
            say(f"stage {name}: skipped ({exc})")
        except OOM as exc:
            self.results[name] = "oom"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "out of memory"
            say(f"stage {name}: OOM ({first[:160]}); memory freed, continuing")
        except Exception as exc:  # noqa: BLE001 - report, free, continue with the next stage
            self.results[name] = "error"
            say(f"stage {name}: ERROR {type(exc).__name__}: {str(exc)[:300]}")
        finally:
            self.free()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny config on CPU (seconds)")
    parser.add_argument("--device", default=None, help="default: cuda if available (smoke: cpu)")
    parser.add_argument("--budget", type=float, default=200.0, help="global time budget, seconds")
    parser.add_argument("--peak-tflops", type=float, default=None, help="GPU peak bf16 TFLOP/s")
    parser.add_argument("--sample-dropout", action="store_true",
                        help="train stages with per-sample dropout keys (the runner's batches)")
    parser.add_argument("--simulate-oom", action="append", metavar="STAGE",
                        help="raise an out-of-memory error in STAGE (tests the recovery)")
    args = parser.parse_args(argv)
    budget = Budget(args.budget)
    spec = SPECS["smoke" if args.smoke else "real"]
    default = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    device = torch.device(args.device or default)
    if device.type == "cuda" and not torch.cuda.is_available():
        say("no CUDA device visible: run with --smoke (CPU) or on a GPU machine")
        return 2
    if not args.smoke and device.type != "cuda":
        say("the real-size benchmark needs a GPU (a 7B model); use --smoke on a CPU")
        return 2
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    import transformers

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    say(f"device: {gpu}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{'smoke' if args.smoke else 'Vicuna-7B-shaped'} config, {dtype}")
    torch.manual_seed(0)
    bench = Bench(args, spec, device, dtype)
    bench.run_stage("build", bench.build, budget, needs=20)
    if bench.model is None:
        say("summary: build failed; nothing else can run")
        return 1
    b1, b2 = spec["batches"]
    for ckpt in ("off", "on"):
        if ckpt == "on":
            from lavis_ib.runners.strategies import apply_activation_checkpointing

            apply_activation_checkpointing(list(bench.model.checkpoint_units()))
        for n in (b1, b2):
            name = f"train_b{n}_ckpt_{ckpt}"
            bench.run_stage(name, lambda n=n, name=name: bench.train(n, name), budget, needs=15)
    bench.run_stage("generate_greedy", lambda: bench.generate(1, "generate_greedy"), budget, needs=15)
    bench.run_stage("generate_beam5", lambda: bench.generate(5, "generate_beam5"), budget, needs=20)
    bench.run_stage("ranking", lambda: bench.ranking("ranking"), budget, needs=15)
    for kernel in PACKING_KERNELS:
        bench.run_stage(f"packing_{kernel}", lambda k=kernel: bench.packing(k, f"packing_{k}"),
                        budget, needs=15)
    for mode in MODES:
        bench.run_stage(f"quant_{mode}", lambda mode=mode: quantization_stage(bench, mode),
                        budget, needs=60 if not args.smoke else 5)
    done = sum(v == "ok" for v in bench.results.values())
    parts = ", ".join(f"{k} {v}" for k, v in bench.summary.items())
    elapsed = args.budget - budget.left()
    say(f"summary: {done}/{len(bench.results)} stages ok in {elapsed:.0f} s; {parts}")
    return 1 if "error" in bench.results.values() else 0


if __name__ == "__main__":
    sys.exit(main())

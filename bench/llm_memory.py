"""Memory and speed of the frozen LLM with `model.llm_quantization: int8_weight_only`
against the same model unquantised (`none`), on CPU.

The model is `instructblip:tiny_vicuna` with its LLM replaced (`llm_config`) by a random
LLaMA big enough for the weights to dominate: 1024 wide, 12 layers, FFN 2816, 16 heads,
a 32,000-token vocabulary (220M parameters, 154M of them in the quantised linear layers;
the embeddings and `lm_head` stay unquantised). `random_init_seed` makes both sides
identical before quantisation. Each (precision, mode) runs in a fresh process with a fixed
glibc mmap threshold (`common.MALLOC_ENV`, so freed tensors leave the RSS) and reports:

* LLM weight bytes (`llm_quantization.weight_bytes`: int8 data and scales counted as stored);
* RSS after the model is built (and quantised) and the peak RSS while building, both above
  the RSS after every import (loading builds the unquantised LLM first, so quantising after
  the build does not lower the loading peak);
* LLM forward (batch 2 x 128 tokens) and end-to-end greedy `generate` (batch 2, 16 new
  tokens) wall and CPU time, medians of `--reps` after a warm-up.

The two modes of a precision run in alternate order over `--rounds` rounds (A B, B A)
and their medians are compared. The forward's LLM logits are compared: relative
difference ||q - ref|| / ||ref|| (the script fails above 10%: a sanity bound) and top-1
agreement (share of positions whose most likely next token is the same).

    python bench/llm_memory.py --threads 1   # about 6 minutes on a shared 2-core VM
    python bench/llm_memory.py --smoke       # tiny sizes (the test suite)

Last line: ``summary: int8_weight_only/none fp32 weights X.XXx, RSS Y.YYx, forward Z.ZZx, ...``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch

import common

SIZES = {
    "bench": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=12,
                  num_attention_heads=16, num_key_value_heads=16, vocab_size=32000),
    "smoke": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4, vocab_size=1000),
}
MODES = ("none", "int8_weight_only")
#: A sanity bound (broken quantisation gives ~100%), not an accuracy claim: per-channel
#: int8 of Gaussian weights in rows of 1024 errs by ~0.75% per matmul, 7 matmuls a layer.
MAX_LOGIT_REL_DIFF = 0.1


def build(size: str, mode: str, precision: str):
    from lavis_ib import load_model

    llm_config = {"model_type": "llama", "max_position_embeddings": 512, "bos_token_id": 1,
                  "eos_token_id": 2, "pad_token_id": 3, "tie_word_embeddings": False,
                  **SIZES[size]}
    return load_model("instructblip", "tiny_vicuna", is_eval=True, llm_config=llm_config,
                      llm_quantization=mode, llm_precision=precision, random_init_seed=0)


def timed(fn, reps: int) -> tuple[float, float]:
    """(median wall s, median CPU s) of `reps` calls after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(reps):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def child(size: str, mode: str, precision: str, reps: int, logits_path: str) -> dict:
    """One side in this fresh process: memory after building, times, logits to a file."""
    import gc

    from lavis_ib.models.llm.quantization import weight_bytes

    import torchao.quantization  # noqa: F401 - imported by both sides before measuring

    from lavis_ib import load_model

    load_model("instructblip", "tiny_vicuna")   # every lazy import happens here, not below
    gc.collect()
    rss_start = common.rss_mb()
    common.reset_peak()
    model = build(size, mode, precision)
    gc.collect()
    rss_built, peak_built = common.rss_mb(), common.peak_mb()
    ids = torch.randint(4, SIZES[size]["vocab_size"], (2, 128), generator=torch.Generator().manual_seed(1))
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))

    def forward():
        with torch.no_grad():
            return model.llm(input_ids=ids).logits

    def generate():
        return model.generate({"image": images, "prompt": "describe the image"},
                              num_beams=1, max_length=16, min_length=16)

    torch.save(forward().float(), logits_path)
    fwd, gen = timed(forward, reps), timed(generate, reps)
    return {"mode": mode, "precision": precision, "llm_weight_mb": weight_bytes(model.llm) / 2**20,
            "rss_model_mb": rss_built - rss_start, "build_peak_mb": peak_built - rss_start,
            "forward_s": fwd[0], "forward_cpu_s": fwd[1], "generate_s": gen[0],
            "generate_cpu_s": gen[1]}


def run_precision(args, size: str, precision: str, folder: str) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {m: [] for m in MODES}
    for r in range(args.rounds):
        for mode in (MODES if r % 2 == 0 else MODES[::-1]):
            extra = ["--smoke"] if args.smoke else []
            if args.threads:
                extra += ["--threads", str(args.threads)]
            results[mode].append(common.run_child(__file__, [
                "--child", mode, "--precision", precision, "--reps", str(args.reps),
                "--logits", os.path.join(folder, f"{precision}_{mode}.pt"), *extra]))
    return results


def med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--precisions", default="fp32,bf16", help="llm_precision values")
    parser.add_argument("--reps", type=int, default=3, help="timed calls per process")
    parser.add_argument("--rounds", type=int, default=2, help="processes per side")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--logits", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    size = "smoke" if args.smoke else "bench"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(size, args.child, args.precision, args.reps, args.logits)))
        return 0
    print(common.machine())
    rows, summary, failed = [], [], False
    with tempfile.TemporaryDirectory() as folder:
        for precision in args.precisions.split(","):
            res = run_precision(args, size, precision, folder)
            ref, got = (torch.load(os.path.join(folder, f"{precision}_{m}.pt")) for m in MODES)
            rel = ((got - ref).norm() / ref.norm()).item()
            top1 = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
            failed |= not rel < MAX_LOGIT_REL_DIFF
            for mode in MODES:
                rows.append([precision, mode, med(res[mode], "llm_weight_mb"),
                             med(res[mode], "rss_model_mb"), med(res[mode], "build_peak_mb"),
                             med(res[mode], "forward_s"), med(res[mode], "forward_cpu_s"),
                             med(res[mode], "generate_s"), med(res[mode], "generate_cpu_s")])
            q, n = res["int8_weight_only"], res["none"]
            ratio = lambda key: med(q, key) / med(n, key)  # noqa: E731
            summary.append(f"{precision} weights {ratio('llm_weight_mb'):.2f}x, RSS "
                           f"{ratio('rss_model_mb'):.2f}x, build peak {ratio('build_peak_mb'):.2f}x, "
                           f"forward {ratio('forward_s'):.2f}x (CPU {ratio('forward_cpu_s'):.2f}x), "
                           f"generate {ratio('generate_s'):.2f}x (CPU {ratio('generate_cpu_s'):.2f}x), "
                           f"logits rel diff {rel:.2e}, top-1 agreement {top1:.1%}")
    print(common.table(["llm_precision", "llm_quantization", "LLM weights MiB", "RSS of model MiB",
                        "build peak MiB", "forward s", "forward CPU s", "generate s",
                        "generate CPU s"], rows))
    if failed:
        print("; ".join(summary))
        print(f"FAILED: quantised logits differ by more than {MAX_LOGIT_REL_DIFF:.0%} relative")
        return 1
    print("summary: int8_weight_only/none " + "; ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

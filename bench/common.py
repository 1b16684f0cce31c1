"""Shared helpers of the CPU benchmarks: machine description, interleaved timing, peak RSS,
tables, and the benchmark InstructBLIP checkpoint written by transformers itself.

Scripts run as ``python bench/<name>.py`` (this folder is then first on ``sys.path``, so
they ``import common``). Timing is robust on a shared machine: both sides are warmed up,
then timed in alternating order (ours, peer, peer, ours, ...) and the medians compared.
Memory is the growth of the process's peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs``) over a step, measured in a fresh subprocess per side with a
fixed glibc mmap threshold so that freed tensors return to the OS and RSS tracks live
memory.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable, Mapping, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `import lavis_ib` from a checkout without installing it
    sys.path.insert(0, ROOT)

#: glibc: a fixed threshold disables the dynamic one, so every large tensor is mmapped and
#: unmapped on free; peak RSS then follows the peak of live memory.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def machine() -> str:
    """One line: CPU count and model, Python, torch, transformers versions."""
    import torch
    import transformers

    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"nproc={os.cpu_count()}, CPU: {model}, torch threads={torch.get_num_threads()}, "
            f"python {platform.python_version()}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}")


def interleaved(sides: Mapping[str, Callable[[], object]], reps: int,
                warmup: int = 1) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(wall seconds, process CPU seconds) of each call of each side: `warmup` untimed calls
    each, then `reps` rounds whose order alternates (A B, B A, ...) so that slow phases of
    a shared machine hit both sides. CPU time (all threads of this process) is the steadier
    number where other processes compete for the cores."""
    names = list(sides)
    for _ in range(warmup):
        for name in names:
            sides[name]()
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        for name in (names if r % 2 == 0 else names[::-1]):
            start, start_cpu = time.perf_counter(), time.process_time()
            sides[name]()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return wall, cpu


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (pastes into BENCHMARKS.md as is)."""
    cells = [[str(c) for c in header]] + [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in row]
                                          for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


# -- peak memory ------------------------------------------------------------------------
def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def rss_mb() -> float:
    """Resident set size now, MiB."""
    return _status_kb("VmRSS") / 1024


def reset_peak() -> None:
    """Reset the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_mb() -> float:
    """Peak resident set size since the last `reset_peak`, MiB."""
    return _status_kb("VmHWM") / 1024


def peak_growth(fn: Callable[[], object], repeats: int = 2) -> tuple[float, float]:
    """(peak RSS growth over `fn` calls, RSS before them), MiB; call once untimed first."""
    import gc

    gc.collect()
    before = rss_mb()
    reset_peak()
    for _ in range(repeats):
        fn()
    return peak_mb() - before, before


def run_child(script: str, args: Sequence[str], timeout: float = 600) -> dict:
    """Run `python script args...` in a fresh process with `MALLOC_ENV`; parse the last
    stdout line as JSON."""
    env = {**os.environ, **MALLOC_ENV}
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the benchmark model (a real transformers checkpoint) --------------------------------
#: Sizes of the benchmark InstructBLIP: a 2-block EVA-width ViT at 224 px, the full-width
#: Q-Former (768 wide, 12 layers, 32 queries, BERT vocabulary) and a small LLaMA with
#: Vicuna's 32,000-token vocabulary. "smoke": tiny, for the test suite.
SIZES = {
    "bench": dict(
        vision=dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=2,
                    num_attention_heads=16, image_size=224, patch_size=14),
        qformer=dict(vocab_size=30523, hidden_size=768, num_hidden_layers=12,
                     num_attention_heads=12, intermediate_size=3072, encoder_hidden_size=1408),
        text=dict(vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
                  num_attention_heads=8, num_key_value_heads=8),
        queries=32),
    "smoke": dict(
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                    num_attention_heads=2, image_size=28, patch_size=14),
        qformer=dict(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=48, max_position_embeddings=128, encoder_hidden_size=32),
        text=dict(vocab_size=600, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4),
        queries=4),
}


def llama_tokenizer(vocab_size: int):
    """lavis_ib's tiny character-level LLaMA tokenizer grown to `vocab_size` ids (filler
    pieces '▁w<i>' that decode to distinct words) with `<image>` as the last id."""
    from transformers import AddedToken, LlamaTokenizer

    from lavis_ib.testing.tiny_assets import tiny_llama_tokenizer

    vocab = dict(tiny_llama_tokenizer().get_vocab())
    vocab = {k: v for k, v in vocab.items() if v < 200 and k != "<image>"}
    i = 0
    while len(vocab) < vocab_size - 1:
        vocab.setdefault(f"\u2581w{i}", len(vocab))
        i += 1
    tok = LlamaTokenizer(vocab=vocab, merges=[], add_bos_token=True, add_eos_token=False,
                         pad_token="[PAD]")
    tok.add_tokens([AddedToken("<image>", normalized=False, special=True)], special_tokens=True)
    if len(tok) != vocab_size:
        raise RuntimeError(f"benchmark tokenizer has {len(tok)} ids, wanted {vocab_size}")
    return tok


def write_checkpoint(directory: str, size: str = "bench", seed: int = 0) -> str:
    """An `InstructBlipForConditionalGeneration` + `InstructBlipProcessor` directory of
    `SIZES[size]`, random weights (query/Q-Former/projection scaled up so that outputs
    depend on them). Reused when it already exists."""
    import torch
    from transformers import (InstructBlipConfig, InstructBlipForConditionalGeneration,
                              InstructBlipProcessor)

    from lavis_ib.testing.tiny_assets import tiny_bert_tokenizer

    if os.path.isfile(os.path.join(directory, "model.safetensors")):
        return directory
    spec = SIZES[size]
    tok = llama_tokenizer(spec["text"]["vocab_size"])
    qtok = tiny_bert_tokenizer()
    qtok.truncation_side = "left"
    import transformers

    image_cls = getattr(transformers, "BlipImageProcessorPil", None) or transformers.BlipImageProcessor
    n = spec["vision"]["image_size"]
    processor = InstructBlipProcessor(
        image_processor=image_cls(size={"height": n, "width": n}, do_convert_rgb=True),
        tokenizer=tok, qformer_tokenizer=qtok, num_query_tokens=spec["queries"])
    text = dict(model_type="llama", max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
                pad_token_id=3, tie_word_embeddings=False, **spec["text"])
    config = InstructBlipConfig(vision_config=spec["vision"], qformer_config=spec["qformer"],
                                text_config=text, num_query_tokens=spec["queries"],
                                image_token_index=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    model = InstructBlipForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.query_tokens.normal_(0, 1.0)
        model.language_projection.weight.normal_(0, 0.05)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory

"""Training throughput on the paper's instruction-tuning mixture: padded micro-batches (each
padded to its longest sequence, as LAVIS trains) against packed ones (`run.packing`: the
sequences end to end, position ids restarting per sample, no padding).

The mixture (`mixture.py`): the 13 held-in datasets at their square-root mixing weights with
the Vicuna-7B project's hand adjustments, one dataset per micro-batch of 8 (the project's
per-device batch, `mix_unit: micro_batch`), a template drawn per sample from our template
tables, question / answer / caption / OCR / LLaVA-turn lengths drawn from the published
distributions written out there; instructions left-truncated to 128 tokens, targets to 256,
as the model does. Token ids are random (lengths are what costs); the Q-Former reads an
instruction of the same number of words.

The model: InstructBLIP with a Vicuna-shaped LLM (LLaMA layers, 32,000-token vocabulary,
head width 64, SwiGLU ratio 2.69; 768 wide, 6 layers) written by transformers
(`common.write_checkpoint`), fp32. In InstructBLIP Vicuna-7B the frozen LLM does about 80-90%
of a step's arithmetic (ViT-g, 1B parameters, forward only over 257 image tokens: about
0.5 TFLOP a sample; Vicuna-7B forward and input-gradient backward over about 80 positions:
about 2 TFLOP); here the vision side is narrowed (256 wide: ViT 2 blocks at 224 px,
Q-Former 4 layers) so that the LLM dominates the arithmetic too. The measured CPU-time share
of the LLM in a padded step is printed (`LLM share`): packing speeds up that share only,
so a lower share here understates a 7B model's gain. Both sides run the same micro-batches
on the same model (zero_grad, encode, loss, backward, AdamW step: `model.forward` minus
the tokenizer; padded = our padded path, which already computes logits at target positions
only), warmed up, then alternating which side goes first; wall and process CPU time summed.

Two mixings: `mix_unit: micro_batch` (one dataset per micro-batch, LAVIS's and the
default; the headline lines) and `mix_unit: sample` (each sample draws its dataset, so
short VQA samples share micro-batches with long LLaVA ones).

    python bench/train_throughput.py            # a few minutes on 2 cores
    python bench/train_throughput.py --smoke    # tiny sizes (the test suite)

Prints ``train speedup vs padded: N.Nx`` (samples/s, wall), ``positions saved: N%`` (LLM
positions, padding included, summed over the micro-batches) and whether the speedup is at
least 0.6 x the ratio of positions computed.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
import yaml

import common
import mixture

#: the throughput model: the LLM Vicuna-shaped; vision and Q-Former narrow (see above)
SIZES = {
    "throughput": dict(
        vision=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=2,
                    num_attention_heads=4, image_size=224, patch_size=14),
        qformer=dict(vocab_size=30523, hidden_size=256, num_hidden_layers=4,
                     num_attention_heads=4, intermediate_size=1024, encoder_hidden_size=256),
        text=dict(vocab_size=32000, hidden_size=768, intermediate_size=2064,
                  num_hidden_layers=6, num_attention_heads=12, num_key_value_heads=12),
        queries=32),
    "smoke": common.SIZES["smoke"],
}
PROJECT = os.path.join(common.ROOT, "configs", "projects", "instructblip",
                       "instruction_tuning_vicuna7b.yaml")
MAX_TXT_LEN, MAX_OUTPUT_TXT_LEN = 128, 256
BATCH = 8


def mixture_weights() -> dict[str, float]:
    """Sampling probabilities: sqrt(size) x the project's sample_ratio (OKVQA up, A-OKVQA
    down), by the library's own `mixing_weights`."""
    from lavis_ib.datasets.mixing import mixing_weights

    with open(PROJECT) as f:
        datasets = yaml.safe_load(f)["datasets"]
    sizes = {name: spec[0] for name, spec in mixture.DATASETS.items()}
    assert set(sizes) == set(datasets), "mixture.py and the project list different datasets"
    ratios = {n: float((d or {}).get("sample_ratio", 1.0)) for n, d in datasets.items()}
    return mixing_weights(sizes, ratios)


def draw(dist, rng: np.random.Generator) -> int:
    if dist[0] == "discrete":
        values, probs = zip(*dist[1].items())
        return int(rng.choice(values, p=np.asarray(probs) / sum(probs)))
    _, mean, sd, lo, hi = dist
    sigma2 = np.log1p((sd / mean) ** 2)
    value = rng.lognormal(np.log(mean) - sigma2 / 2, np.sqrt(sigma2))
    return int(min(max(round(value), lo), hi))


def tokens(words: int) -> int:
    return max(1, round(words * mixture.TOKENS_PER_WORD))


def template_words(family: str, rng: np.random.Generator) -> int:
    """Words of a template drawn uniformly from its family (placeholders not counted)."""
    from lavis_ib.processors.templates import TEMPLATE_FAMILIES

    templates = TEMPLATE_FAMILIES[family]
    text = templates[int(rng.integers(len(templates)))]
    return len(text.replace("{question}", "").replace("{answer}", "").split())


def sample_lengths(name: str, rng: np.random.Generator) -> tuple[int, int, int]:
    """(instruction tokens with BOS, target tokens with EOS, instruction words) of one
    sample of dataset `name`, truncated as the model truncates."""
    _, family, parts, _ = mixture.DATASETS[name]
    words = 0
    prompt = 0
    if "ocr" in parts:   # "OCR tokens: t1, t2, ... . " before the instruction
        n = draw(parts["ocr"], rng)
        prompt += 3 + round(n * mixture.TOKENS_PER_OCR_TOKEN)
        words += n + 2
    if family == "caption":
        w = template_words("caption", rng)
        target = tokens(draw(parts["caption"], rng))
    elif family == "vqa":
        w = template_words("vqa", rng) + draw(parts["question"], rng)
        target = tokens(draw(parts["answer"], rng))
    elif family == "qg":
        w = template_words("qg", rng) + draw(parts["answer"], rng)
        target = tokens(draw(parts["question"], rng))
    else:   # LLaVA: earlier turns as "USER: q ASSISTANT: a" lines, then the question
        w = draw(parts["question"], rng)
        for _ in range(draw(parts["history"], rng) if "history" in parts else 0):
            prompt += 6   # "USER:" / "ASSISTANT:" markers and the line break
            w += draw(parts["question"], rng) + draw(parts["answer"], rng)
        target = tokens(draw(parts["answer"], rng))
    prompt += 1 + tokens(w)
    return min(prompt, MAX_TXT_LEN), min(target + 1, MAX_OUTPUT_TXT_LEN), words + w


def micro_batches(n: int, seed: int, vocab: int, image_size: int, mix_unit: str,
                  batch: int = BATCH):
    """`n` micro-batches of the mixture, each sample's dataset drawn by the mixing weights
    once per micro-batch (`mix_unit` "micro_batch", LAVIS's way) or per sample ("sample")."""
    rng = np.random.default_rng(seed)
    weights = mixture_weights()
    names = sorted(weights)
    probs = np.asarray([weights[k] for k in names])
    probs = probs / probs.sum()
    out = []
    for k in range(n):
        name = names[int(rng.choice(len(names), p=probs))]
        prompts, targets, qtexts = [], [], []
        for _ in range(batch):
            if mix_unit == "sample":
                name = names[int(rng.choice(len(names), p=probs))]
            p, t, w = sample_lengths(name, rng)
            prompts.append([1] + rng.integers(4, vocab - 1, p - 1).tolist())
            targets.append(rng.integers(4, vocab - 1, t - 1).tolist() + [2])
            qtexts.append(" ".join(["a"] * min(w, MAX_TXT_LEN)))
        image = torch.randn(batch, 3, image_size, image_size,
                            generator=torch.Generator().manual_seed(seed * 1000 + k))
        out.append({"dataset": name if mix_unit == "micro_batch" else "(mixed)", "image": image, "qformer_text": qtexts,
                    "prompts": prompts, "targets": targets})
    return out


def load(size: str, directory: str):
    from lavis_ib.models.instructblip import InstructBLIP

    common.SIZES.setdefault(size, SIZES[size])
    common.write_checkpoint(directory, size)
    return InstructBLIP.from_config({"pretrained": directory, "max_txt_len": MAX_TXT_LEN,
                                     "max_output_txt_len": MAX_OUTPUT_TXT_LEN})


def make_step(model, optimizer, packing: str):
    """One training step of a micro-batch: (loss, LLM positions computed)."""
    def step(mb):
        model.adapter.set_packing(packing)
        optimizer.zero_grad(set_to_none=True)
        prefix = model.encode(mb["image"], mb["qformer_text"])
        nll, count = model.adapter.loss(prefix, mb["prompts"], mb["targets"])
        loss = nll / count.clamp(min=1)
        loss.backward()
        optimizer.step()
        return loss.detach(), model.adapter.last_llm_positions
    return step


def check(model, batches) -> float:
    """Largest relative loss difference, packed vs padded, dropout off, one micro-batch of
    each dataset present."""
    model.eval()
    worst, seen = 0.0, set()
    with torch.no_grad():
        for mb in batches:
            if mb["dataset"] in seen:
                continue
            seen.add(mb["dataset"])
            losses = []
            for packing in ("false", "true"):
                model.adapter.set_packing(packing)
                prefix = model.encode(mb["image"], mb["qformer_text"])
                nll, count = model.adapter.loss(prefix, mb["prompts"], mb["targets"])
                losses.append((nll / count).item())
            worst = max(worst, abs(losses[1] - losses[0]) / abs(losses[0]))
    model.train()
    return worst


def llm_share(model, mb) -> float:
    """CPU-time share of the LLM (loss forward and backward) in a padded step."""
    model.adapter.set_packing("false")
    start = time.process_time()
    prefix = model.encode(mb["image"], mb["qformer_text"])
    encode = time.process_time() - start
    detached = prefix.detach().requires_grad_(True)
    start = time.process_time()
    nll, count = model.adapter.loss(detached, mb["prompts"], mb["targets"])
    (nll / count).backward()
    llm = time.process_time() - start
    start = time.process_time()
    prefix.backward(detached.grad)
    encode += time.process_time() - start
    return llm / (llm + encode)


def measure(smoke: bool, batches: int | None = None, seed: int = 0,
            directory: str | None = None, mix_unit: str = "micro_batch", model=None) -> dict:
    size = "smoke" if smoke else "throughput"
    n = batches or (4 if smoke else 24)
    directory = directory or os.path.join(tempfile.gettempdir(), "lavis_ib_bench", size)
    if model is None:
        torch.manual_seed(0)
        model = load(size, directory)
    spec = SIZES[size]
    mbs = micro_batches(n + 2, seed, spec["text"]["vocab_size"], spec["vision"]["image_size"],
                        mix_unit)
    worst = check(model, mbs)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=1e-5, weight_decay=0.05)
    sides = {"padded": make_step(model, optimizer, "false"),
             "packed": make_step(model, optimizer, "true")}
    for mb in mbs[:2]:   # warm-up
        for step in sides.values():
            step(mb)
    share = llm_share(model, mbs[2])
    wall = {s: 0.0 for s in sides}
    cpu = {s: 0.0 for s in sides}
    positions = {s: 0 for s in sides}
    per_dataset: dict[str, list[int]] = {}
    for k, mb in enumerate(mbs[2:]):
        order = list(sides) if k % 2 == 0 else list(sides)[::-1]
        for side in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            _, pos = sides[side](mb)
            wall[side] += time.perf_counter() - start
            cpu[side] += time.process_time() - start_cpu
            positions[side] += pos
            row = per_dataset.setdefault(mb["dataset"], [0, 0, 0])
            row[0 if side == "padded" else 1] += pos
        per_dataset[mb["dataset"]][2] += 1
    samples = n * BATCH
    return {"size": size, "mix_unit": mix_unit, "model": model, "micro_batches": n, "samples": samples, "check_rel": worst,
            "llm_share": share, "wall": wall, "cpu": cpu, "positions": positions,
            "per_dataset": per_dataset,
            "speedup": wall["padded"] / wall["packed"],
            "cpu_speedup": cpu["padded"] / cpu["packed"],
            "positions_ratio": positions["padded"] / positions["packed"]}


def report(r: dict, label: str = "") -> list[str]:
    rows = [[side, r["samples"] / r["wall"][side], r["samples"] / r["cpu"][side],
             r["positions"][side] / r["micro_batches"]] for side in ("padded", "packed")]
    lines = [common.table(["micro-batches", "samples/s (wall)", "samples/s (CPU)",
                           "LLM positions per step"], rows)]
    ds = [[name, v[2], v[0] / max(v[2], 1),
           v[1] / max(v[2], 1), 100 * (1 - v[1] / v[0])]
          for name, v in sorted(r["per_dataset"].items())]
    lines.append(common.table(["dataset", "micro-batches", "padded positions", "packed positions",
                               "saved %"], ds))
    ratio = r["positions_ratio"]
    lines.append(f"check: packed vs padded loss, largest relative difference {r['check_rel']:.1e}")
    lines.append(f"LLM share of a padded step (CPU time): {100 * r['llm_share']:.0f}%")
    lines.append(f"positions saved{label}: {100 * (1 - 1 / ratio):.0f}% (ratio of positions computed "
                 f"{ratio:.2f}x)")
    lines.append(f"train speedup vs padded{label}: {r['speedup']:.1f}x (samples/s, wall; CPU time "
                 f"{r['cpu_speedup']:.2f}x; {r['speedup']:.2f}x exactly)")
    lines.append(f"speedup / positions ratio: {r['speedup'] / ratio:.2f} "
                 f"({'>=' if r['speedup'] >= 0.6 * ratio else '<'} 0.6)")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--batches", type=int, default=None, help="timed micro-batches (24)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", default=None, help="checkpoint folder (written if missing)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--no-eval", action="store_true",
                        help="leave out the evaluation pass (bench/eval_throughput.py)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {common.machine()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    model, failed, results = None, False, []
    # LAVIS's mixing (one dataset per micro-batch, the headline) then per-sample mixing
    for mix_unit, label in (("micro_batch", ""), ("sample", " (mix_unit sample)")):
        result = measure(args.smoke, args.batches, args.seed, args.dir, mix_unit, model)
        model = result["model"]
        print(f"\n== mix_unit {mix_unit}: {result['size']} model, {result['micro_batches']} "
              f"micro-batches of {BATCH} from the 13-dataset mixture, fp32, sides alternating")
        for line in report(result, label):
            print(line)
        failed |= result["check_rel"] > 1e-5
        results.append(result)
    if failed:
        print("FAILED: packed and padded losses differ; the timings compare different work.")
        return 1
    eval_line = None
    if not args.no_eval:   # the evaluation pass: dataset order vs length-grouped batches
        import eval_throughput

        eval_line = eval_throughput.measure(smoke=args.smoke)["line"]
        print(eval_line)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print("summary: " + "; ".join(
        f"mix_unit {r['mix_unit']}: train speedup {r['speedup']:.2f}x (CPU "
        f"{r['cpu_speedup']:.2f}x), positions saved {100 * (1 - 1 / r['positions_ratio']):.0f}%"
        for r in results) + (f"; {eval_line}" if eval_line else "") + f"; load average after {load}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

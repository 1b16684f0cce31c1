"""Evaluation throughput: batches in dataset order against batches grouped by prompt length
(the default, `length_grouped`), on held-out splits of mixed prompt lengths.

Four splits as the held-out evaluation runs them (one after the other, each its own
batches): TextVQA and GQA generate (beam 5, at most 10 tokens), ScienceQA ranks its choices
and VisDial its 100 candidate answers; each with its shipped template (the datasets'
defaults.yaml) and questions, OCR tokens, contexts, choices, captions and dialog rounds
whose lengths are drawn from the distributions below (each with its source). Text is made
of words that are one token each (`ranking.write_word_tokenizer`'s merges), emitted
`TOKENS_PER_WORD` per word of the distribution, so prompt tokens follow the real ones.

The model: InstructBLIP with the bench checkpoint's Vicuna-shaped LLM (`common.SIZES`:
4 LLaMA layers of width 512, 32,000-token vocabulary), 32 queries, on tiny_vicuna's vision
side and Q-Former: in InstructBLIP Vicuna-7B the LLM's prompt prefill (about 14 GFLOP a
position, 100-200 positions, times the beams) outweighs the ViT-g (about 0.5 TFLOP an
image), and only the LLM and Q-Former text work depend on the padding. fp32. Both orders
run the same samples through `lavis_ib.runners.eval_loop.run_shard` (the real evaluation
loop: loader, task, model), `--reps` passes each, alternating which goes first (A B, B A);
the records of every pass must be identical.

    python bench/eval_throughput.py            # a few minutes on 2 cores
    python bench/eval_throughput.py --smoke    # tiny sizes (the test suite)

Prints ``eval speedup vs dataset order: N.Nx`` (samples/s, wall) and the LLM prompt
positions (soft prompts + padded prompt, summed over batches) of each order. The train
bench calls `measure(smoke)` and prints its ``line``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (puts the checkout on sys.path)
import ranking  # noqa: E402

# -- length distributions, in words ------------------------------------------------------
# ("discrete", {words: probability}) or ("lognormal", mean, sd, lo, hi): a log-normal with
# that mean and standard deviation, rounded, clipped to [lo, hi]. Values marked "estimate"
# are ours (no published figure at hand): the first to replace with counts from the files.
TEXTVQA_QUESTION = ("lognormal", 7.2, 2.5, 3, 30)
# ^ TextVQA (Singh et al., CVPR 2019, Sec. 3): questions average 7.18 words (spread: estimate).
TEXTVQA_OCR = ("lognormal", 12.0, 10.0, 0, 30)
# ^ Rosetta OCR tokens per TextVQA image (estimate: about 12, a long tail; the prompt keeps
#   the first 30, lavis_ib.common.prompts.OCR_MAX_TOKENS).
GQA_QUESTION = ("lognormal", 9.0, 3.5, 3, 30)
# ^ GQA balanced test-dev questions (Hudson & Manning, CVPR 2019): compositional questions
#   of a few to about 30 words (mean and spread: estimate).
SCIENCEQA_QUESTION = ("lognormal", 12.1, 6.0, 3, 60)
SCIENCEQA_CHOICE = ("lognormal", 4.4, 3.0, 1, 20)
# ^ ScienceQA (Lu et al., NeurIPS 2022, Table 1): questions average 12.11 words, choices
#   4.40 words (spreads: estimate).
SCIENCEQA_CONTEXT = ("discrete", {0: 0.35, 10: 0.2, 25: 0.2, 50: 0.15, 100: 0.1})
# ^ ScienceQA image questions' hint (the "Context:" text): absent for many, a sentence for
#   others, a paragraph for some (estimate).
SCIENCEQA_CHOICES = ("discrete", {2: 0.45, 3: 0.25, 4: 0.25, 5: 0.05})
# ^ ScienceQA: 2 to 5 choices per question (the shares are an estimate).
VISDIAL_CAPTION = ("lognormal", 10.5, 2.4, 8, 30)
# ^ VisDial v1.0 starts each dialog from a COCO caption (Chen et al. 2015: at least 8 words,
#   about 10.5 on average; spread estimate).
VISDIAL_QUESTION = ("lognormal", 5.1, 1.5, 2, 15)
VISDIAL_ANSWER = ("lognormal", 2.9, 1.8, 1, 15)
# ^ VisDial (Das et al., CVPR 2017, Sec. 4): questions average 5.1 words, answers 2.9 words;
#   10 rounds per dialog, 100 candidate answers per round (spreads: estimate).
TOKENS_PER_WORD = 1.3
# ^ LLaMA's 32,000-piece vocabulary on English text: about 1.3 tokens per word (estimate,
#   the usual rule of thumb).

#: split -> (task, shipped template, inference settings) as the datasets' defaults.yaml
GENERATE = {"num_beams": 5, "max_length": 10, "min_length": 1, "length_penalty": 0}
SPLITS = {
    "textvqa": ("vqa", "OCR tokens: {}. Question: {} Short answer:",
                {"inference": "generate", "generate": GENERATE}),
    "gqa": ("gqa", "Question: {} Short answer:", {"inference": "generate", "generate": GENERATE}),
    "scienceqa": ("multiple_choice", "Context: {} Question: {} Options: {}. Answer:",
                  {"inference": "rank", "candidates": "choices"}),
    "visdial": ("dialog", "Dialog history: {}\nQuestion: {} Short answer:",
                {"inference": "rank", "candidates": "candidates"}),
}
FILLER = tuple(w for w in ranking.WORDS if len(w) > 1)
BATCH = 8          # the held-out projects' batch_size_eval (zeroshot_heldout_vicuna7b.yaml)
SMOKE_BATCH = 2


def draw(dist, rng: np.random.Generator) -> int:
    if dist[0] == "discrete":
        values, probs = zip(*dist[1].items())
        return int(rng.choice(values, p=np.asarray(probs) / sum(probs)))
    _, mean, sd, lo, hi = dist
    sigma2 = np.log(1 + (sd / mean) ** 2)
    return int(np.clip(round(rng.lognormal(np.log(mean) - sigma2 / 2, np.sqrt(sigma2))), lo, hi))


def text(words: int, rng: np.random.Generator) -> str:
    """About `words` words of text as tokens: TOKENS_PER_WORD one-token words per word."""
    n = int(round(words * TOKENS_PER_WORD))
    return " ".join(FILLER[i] for i in rng.integers(0, len(FILLER), n))


def records(split: str, n: int, seed: int = 0) -> list[dict]:
    """`n` annotation records of `split` with drawn lengths (the same for every seed run)."""
    rng = np.random.default_rng([seed, sum(map(ord, split))])
    out = []
    for i in range(n):
        if split == "textvqa":
            out.append({"question": text(draw(TEXTVQA_QUESTION, rng), rng) + "?",
                        "ocr_tokens": text(draw(TEXTVQA_OCR, rng), rng).split()})
        elif split == "gqa":
            out.append({"question": text(draw(GQA_QUESTION, rng), rng) + "?"})
        elif split == "scienceqa":
            choices = [text(draw(SCIENCEQA_CHOICE, rng), rng)
                       for _ in range(draw(SCIENCEQA_CHOICES, rng))]
            out.append({"question": text(draw(SCIENCEQA_QUESTION, rng), rng) + "?",
                        "context": text(draw(SCIENCEQA_CONTEXT, rng), rng),
                        "choices": choices, "correct_choice_idx": 0})
        else:
            rounds = int(rng.integers(1, 11))
            history = [text(draw(VISDIAL_CAPTION, rng), rng)] + [
                f"{text(draw(VISDIAL_QUESTION, rng), rng)}? {text(draw(VISDIAL_ANSWER, rng), rng)}"
                for _ in range(rounds - 1)]
            out.append({"question": text(draw(VISDIAL_QUESTION, rng), rng),
                        "history": " ".join(history),
                        "candidates": [text(draw(VISDIAL_ANSWER, rng), rng)
                                       for _ in range(100)], "label": 0})
        out[-1]["question_id"] = f"{split}-{i}"
    return out


class Split(torch.utils.data.Dataset):
    """An evaluation split in memory with the dataset contract the loop reads
    (`annotation`, `build_sample`, `collater`); images are fixed random tensors."""

    def __init__(self, name: str, annotation: list[dict], image_size: int) -> None:
        self.name, self.annotation, self.image_size = name, annotation, image_size

    def __len__(self) -> int:
        return len(self.annotation)

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        image = torch.randn(3, self.image_size, self.image_size, generator=g)
        return self.build_sample(self.annotation[i], image, i, 0)

    def build_sample(self, record: dict, visual, index: int, epoch: int) -> dict:
        return {"image": visual, "text_input": record["question"], "answers": ["yes"],
                **record}

    def collater(self, samples):
        from lavis_ib.datasets.datasets.base import collate

        return collate(samples)


def build_model(smoke: bool, tokenizer_dir: str):
    """tiny_vicuna with the Vicuna-shaped LLM of the bench checkpoint (`common.SIZES`:
    LLaMA layers, 32,000-token vocabulary, width 512; 4 layers) and 32 queries."""
    from lavis_ib import load_model

    text = common.SIZES["smoke" if smoke else "bench"]["text"]
    llm = dict(model_type="llama", max_position_embeddings=512, bos_token_id=1,
               eos_token_id=2, pad_token_id=3, tie_word_embeddings=False,
               **{**text, "vocab_size": 1000 if smoke else text["vocab_size"]})
    torch.manual_seed(0)
    return load_model("instructblip", "tiny_vicuna", is_eval=True, llm_config=llm,
                      num_query_token=8 if smoke else 32, llm_tokenizer=tokenizer_dir)


def build(smoke: bool, tokenizer_dir: str, n: int | None = None):
    """(model, {split: (task, dataset)})."""
    from lavis_ib import registry

    model = build_model(smoke, tokenizer_dir)
    n = n or (6 if smoke else 40)
    image_size = 32    # tiny_vicuna's vision side
    splits = {}
    for name, (task_name, prompt, settings) in SPLITS.items():
        cfg = {"task": task_name, "prompt": prompt, **settings}
        if smoke and "generate" in cfg:
            cfg["generate"] = {**GENERATE, "num_beams": 2, "max_length": 3}
        task = registry.get_task_class(task_name).for_dataset(name, cfg, model_cls=type(model))
        annotation = records(name, n)
        if smoke and name == "visdial":
            for record in annotation:
                record["candidates"] = record["candidates"][:10]
        splits[name] = (task, Split(name, annotation, image_size))
    return model, splits


def evaluation_pass(model, splits, grouped: bool, batch: int = BATCH,
                    times: dict | None = None) -> dict:
    """{split: records sorted by id} of one pass over every split; each split's (wall,
    process CPU) seconds are appended to `times[split]`."""
    from lavis_ib.runners.eval_loop import run_shard

    out = {}
    for name, (task, dataset) in splits.items():
        start, start_cpu = time.perf_counter(), time.process_time()
        records, bad = run_shard(model, task, dataset, list(range(len(dataset))),
                                 batch_size=batch, num_workers=0, device=torch.device("cpu"),
                                 desc=name, length_grouped=grouped)
        if times is not None:
            times.setdefault(name, []).append((time.perf_counter() - start,
                                               time.process_time() - start_cpu))
        assert not bad, bad
        out[name] = sorted(records, key=lambda r: str(r["id"]))
    return out


def prompt_positions(model, splits, grouped: bool, batch: int = BATCH) -> int:
    """LLM positions of the prompts (soft prompts + prompt padded to its batch's longest),
    summed over the batches of one pass, read from the loop's own batches."""
    from lavis_ib.runners.eval_loop import shard_loader

    soft, total = model.query_tokens.shape[1], 0
    for name, (task, dataset) in splits.items():
        indices = list(range(len(dataset)))
        loader = shard_loader(model, task, dataset, indices, dataset, batch_size=batch,
                              num_workers=0, length_grouped=grouped, desc=name)
        for samples in loader:
            lengths = [len(model.llm_tokenizer(p).input_ids) for p in task.prompts(samples)]
            total += len(lengths) * (soft + max(lengths))
    return total


def measure(smoke: bool, reps: int | None = None, samples: int | None = None) -> dict:
    """One run: build, check the two orders give identical records, time them alternating.

    Returns a dict: `speedup` (samples/s grouped / dataset order, wall medians),
    `speedup_cpu`, `per_split` ({split: (wall, CPU) speedup}), `samples` (per pass),
    `wall` and `cpu` ({order: [seconds]}),
    `positions` ({order: LLM prompt positions per pass}), `size` and `line` (the
    ``eval speedup vs dataset order: N.Nx`` line)."""
    import logging

    quiet, level = logging.getLogger("lavis_ib"), logging.getLogger("lavis_ib").level
    quiet.setLevel(logging.WARNING)     # the loop's per-split lines, once per pass
    os.environ.setdefault("LAVIS_IB_NO_PROGRESS", "1")
    try:
        return _measure(smoke, reps or (1 if smoke else 2), samples)
    finally:
        quiet.setLevel(level)


def _measure(smoke: bool, reps: int, samples: int | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model, splits = build(smoke, ranking.write_word_tokenizer(tmp), samples)
    batch = SMOKE_BATCH if smoke else BATCH
    per_split: dict = {"dataset order": {}, "grouped": {}}
    seen: list = []

    def one_pass(side: str, grouped: bool) -> None:
        seen.append(evaluation_pass(model, splits, grouped, batch, per_split[side]))

    sides = {side: (lambda s=side, g=g: one_pass(s, g))
             for side, g in (("dataset order", False), ("grouped", True))}
    with torch.no_grad():   # alternating A B, B A, ...: the first call's start-up hits both
        wall, cpu = common.interleaved(sides, reps=reps, warmup=0)
    for records in seen[1:]:
        if records != seen[0]:
            differ = [n for n in splits if records[n] != seen[0][n]]
            raise RuntimeError(f"records differ between the two orders on {differ}")
    speedup = common.median(wall["dataset order"]) / common.median(wall["grouped"])
    speedup_cpu = common.median(cpu["dataset order"]) / common.median(cpu["grouped"])
    positions = {"dataset order": prompt_positions(model, splits, False, batch),
                 "grouped": prompt_positions(model, splits, True, batch)}
    return {"speedup": speedup, "speedup_cpu": speedup_cpu, "wall": wall, "cpu": cpu,
            "samples": sum(len(d) for _, d in splits.values()), "positions": positions,
            "size": "smoke" if smoke else "bench", "splits": list(splits), "batch": batch,
            "per_split": {n: tuple(common.median([t[k] for t in per_split["dataset order"][n]])
                                   / common.median([t[k] for t in per_split["grouped"][n]])
                                   for k in (0, 1)) for n in splits},
            "line": f"eval speedup vs dataset order: {speedup:.1f}x"}


def report(result: dict) -> list[str]:
    rows = []
    for side in ("dataset order", "grouped"):
        wall = common.median(result["wall"][side])
        rows.append([side, wall, common.median(result["cpu"][side]), result["samples"] / wall,
                     result["positions"][side]])
    saved = 1 - result["positions"]["grouped"] / result["positions"]["dataset order"]
    return [common.table(["batches", "wall s", "CPU s", "samples/s (wall)",
                          "LLM prompt positions"], rows),
            f"prompt positions saved: {100 * saved:.0f}%; CPU-time speedup "
            f"{result['speedup_cpu']:.2f}x; per split (wall / CPU): "
            + ", ".join(f"{n} {w:.2f}x / {c:.2f}x" for n, (w, c) in result["per_split"].items()),
            result["line"]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--reps", type=int, default=None, help="timed passes per order (2)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--samples", type=int, default=None, help="samples a split (40)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {common.machine()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    result = measure(args.smoke, args.reps, args.samples)
    print(f"{result['size']} model; splits {', '.join(result['splits'])}, "
          f"{result['samples']} samples a pass in batches of {result['batch']}, fp32, "
          f"{len(result['wall']['grouped'])} timed passes per order (alternating, median); "
          f"records identical in both orders")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for line in report(result):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

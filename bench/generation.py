"""Generation benchmark: lavis_ib's `generate` against transformers' InstructBLIP `generate`
on the same checkpoint (`common.write_checkpoint`, as in train_step.py), greedy and beam 5.

Both generate exactly `--new-tokens` tokens per sequence (min = max length, so early EOS
cannot make one side's work shorter), repetition penalty 1, length penalty 1, the same
prompt for every image of the batch. End-to-end (image encoding included) tokens/s;
repetitions interleaved after a warm-up, medians. Greedy outputs must be identical (the
script fails otherwise); beam-search equality is reported.

    python bench/generation.py            # about 1-2 minutes on 2 cores
    python bench/generation.py --smoke    # tiny sizes (the test suite)

Last line: ``summary: tokens/s ratio (ours/transformers) greedy X.XXx, beam5 Y.YYx; greedy
outputs equal``.
"""
from __future__ import annotations

import argparse
import sys

import torch

import common
from train_step import default_dir, load_hf, load_ours

PROMPT = "What is happening in this image? Answer in detail."


def images(n: int, size: int, seed: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def ours_generate(model, pixels, new: int, beams: int) -> list[str]:
    return model.generate({"image": pixels, "prompt": PROMPT}, num_beams=beams, max_length=new,
                          min_length=new, repetition_penalty=1.0, length_penalty=1.0)


def hf_generate(model, processor, pixels, new: int, beams: int) -> list[str]:
    n, tok, cfg = pixels.shape[0], processor.tokenizer, model.config
    ids = torch.tensor([[cfg.image_token_index] * cfg.num_query_tokens + tok(PROMPT).input_ids] * n)
    q = processor.qformer_tokenizer([PROMPT] * n, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(pixel_values=pixels, qformer_input_ids=q.input_ids,
                             qformer_attention_mask=q.attention_mask, input_ids=ids,
                             attention_mask=torch.ones_like(ids), do_sample=False, num_beams=beams,
                             max_new_tokens=new, min_new_tokens=new, repetition_penalty=1.0,
                             length_penalty=1.0)
    if out.shape[1] > new:  # decoder-only models return the prompt ids first
        out = out[:, ids.shape[1]:]
    return [t.strip() for t in tok.batch_decode(out, skip_special_tokens=True)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens per sequence (32)")
    parser.add_argument("--reps", type=int, default=None, help="timed calls per side (3)")
    parser.add_argument("--dir", default=None, help="checkpoint folder (written if missing)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)
    size = "smoke" if args.smoke else "bench"
    new = args.new_tokens or (6 if args.smoke else 32)
    reps = args.reps or (1 if args.smoke else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    directory = common.write_checkpoint(args.dir or default_dir(size), size)
    torch.manual_seed(0)
    ours = load_ours(directory).eval()
    hf, processor = load_hf(directory)
    hf.eval()
    pixels = images(args.batch, common.SIZES[size]["vision"]["image_size"])

    rows, ratios, equal = [], {}, {}
    for beams, label in ((1, "greedy"), (5, "beam5")):
        a = ours_generate(ours, pixels, new, beams)
        b = hf_generate(hf, processor, pixels, new, beams)
        equal[label] = a == b
        if not any(a):
            print(f"FAILED: {label} generated only empty strings; the comparison would be empty.")
            return 1
        if label == "greedy" and not equal[label]:
            print(f"FAILED: greedy outputs differ:\n  lavis_ib:     {a}\n  transformers: {b}")
            return 1
        sides = {"lavis_ib": lambda: ours_generate(ours, pixels, new, beams),
                 "transformers": lambda: hf_generate(hf, processor, pixels, new, beams)}
        wall, cpu = common.interleaved(sides, reps=reps, warmup=0)  # the check above warmed up
        tokens = args.batch * new
        for name in sides:
            rows.append([label, name, common.median(wall[name]), common.median(cpu[name]),
                         tokens / common.median(wall[name]), equal[label]])
        ratios[label] = (common.median(wall["transformers"]) / common.median(wall["lavis_ib"]),
                         common.median(cpu["transformers"]) / common.median(cpu["lavis_ib"]))
    print(f"machine: {common.machine()}")
    print(f"config: {size}, batch {args.batch}, {new} new tokens per sequence, {reps} timed "
          f"calls per side (interleaved, median)")
    print(common.table(["decoding", "model", "wall s", "CPU s", "tokens/s (wall)", "outputs equal"],
                       rows))
    print(f"summary: tokens/s ratio (ours/transformers, >1 = ours faster) greedy wall "
          f"{ratios['greedy'][0]:.2f}x (CPU {ratios['greedy'][1]:.2f}x), beam5 wall "
          f"{ratios['beam5'][0]:.2f}x (CPU {ratios['beam5'][1]:.2f}x); greedy outputs equal; "
          f"beam5 outputs {'equal' if equal['beam5'] else 'DIFFER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

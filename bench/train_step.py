"""Training-step benchmark: lavis_ib's InstructBLIP against transformers'
`InstructBlipForConditionalGeneration` with the same weights and the same frozen parts.

transformers writes a checkpoint (`common.write_checkpoint`: a 2-block EVA-width ViT at
224 px, the full-width 32-query Q-Former, a small LLaMA with 32,000 tokens); lavis_ib loads
it with `pretrained=`. Both train query tokens, Q-Former, ln_vision (transformers:
`vision_model.post_layernorm`) and the projection with AdamW; ViT and LLM are frozen (eval
mode, no parameter gradients) in both.

1. Check: dropout off, the same batch gives the same loss (1e-4) and the same query-token
   gradient (relative 1e-3) in both.
2. Time: a step (zero_grad, forward, backward, AdamW step) of each in train mode, both models
   in this process, warmed up, repetitions interleaved; medians. Then ours with the
   runner's per-sample dropout keys against ours with plain dropout (the cost of dropout
   masks that do not depend on the batch split, docs/determinism.md): one line,
   ``per-sample dropout: ...``.
3. Memory: each side in a fresh subprocess; the peak RSS growth over a step (after a warm-up
   step, so AdamW state exists before the measurement) and the process's peak RSS.

    python bench/train_step.py            # about 2 minutes on 2 cores
    python bench/train_step.py --smoke    # tiny sizes (the test suite)

Last line: ``summary: time ratio (transformers/ours, >1 = ours faster) wall X.XXx, CPU
X.XXx; peak step memory ratio (ours/transformers, <1 = ours smaller) Y.YY, process peak
ratio Y.YY; loss diff Z``. "peak step" is the peak RSS during a step above the RSS between
steps (weights, AdamW state and the last gradients resident): activations, logits and
temporaries. "process peak" is the whole process's peak RSS (weights and AdamW state
included).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import torch

import common

PROMPTS = ["What is happening in this image? Answer in detail.",
           "Describe the picture briefly.",
           "Is there a dog on the left of the red bus? Give a short reason.",
           "Read the text in the image."]
TARGETS = ["two people are walking a dog next to a red bus in a busy street",
           "a cat on a mat", "yes, the dog stands on the left side", "stop"]
TRAINABLE_HF = ("query_tokens", "qformer.", "language_projection.", "vision_model.post_layernorm.")


def default_dir(size: str) -> str:
    return os.path.join(tempfile.gettempdir(), "lavis_ib_bench", size)


def load_ours(directory: str):
    from lavis_ib.models.instructblip import InstructBLIP

    return InstructBLIP.from_config({"pretrained": directory, "max_txt_len": 128,
                                     "max_output_txt_len": 256})


def load_hf(directory: str):
    """transformers' model with the InstructBLIP freezing applied (ViT and LLM frozen and in
    eval mode; `post_layernorm` is LAVIS's ln_vision and trains)."""
    from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

    model = InstructBlipForConditionalGeneration.from_pretrained(directory)
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(TRAINABLE_HF))
    return model, InstructBlipProcessor.from_pretrained(directory)


def set_mode(model, train: bool, hf: bool = False) -> None:
    """Train/eval mode; transformers' model (`hf`) keeps its frozen parts in eval mode (ours
    does so in its own `train`)."""
    model.train(train)
    if hf:
        model.vision_model.eval()
        model.language_model.eval()


def batch(n: int, image_size: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 3, image_size, image_size, generator=g),
            "text_input": [PROMPTS[i % len(PROMPTS)] for i in range(n)],
            "text_output": [TARGETS[i % len(TARGETS)] for i in range(n)]}


def hf_inputs(processor, config, samples: dict) -> dict:
    """transformers' layout [<image> x Q ; prompt ; target + EOS], right-padded, loss on
    the target tokens only (what lavis_ib computes)."""
    tok, q = processor.tokenizer, config.num_query_tokens
    rows, labels = [], []
    for prompt, target in zip(samples["text_input"], samples["text_output"]):
        tgt = tok(target, add_special_tokens=False).input_ids + [tok.eos_token_id]
        ids = [config.image_token_index] * q + tok(prompt).input_ids + tgt
        rows.append(ids)
        labels.append([-100] * (len(ids) - len(tgt)) + tgt)
    width = max(map(len, rows))
    pad = tok.pad_token_id
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    label_t = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    qenc = processor.qformer_tokenizer(samples["text_input"], padding="longest", truncation=True,
                                       max_length=128, return_tensors="pt")
    return dict(pixel_values=samples["image"], input_ids=input_ids, attention_mask=mask,
                labels=label_t, qformer_input_ids=qenc.input_ids,
                qformer_attention_mask=qenc.attention_mask)


def optimizer(model):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=1e-5, weight_decay=0.05)


def ours_loss(model, samples):
    return model(samples)["loss"]


def hf_loss(model, inputs):
    return model(**inputs).loss


def make_step(loss_fn, model, inputs, opt):
    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model, inputs)
        loss.backward()
        opt.step()
        return loss.detach()
    return step


def check(ours, hf, processor, samples) -> tuple[float, float]:
    """(|loss diff|, relative query-token gradient diff) with dropout off."""
    set_mode(ours, False)
    set_mode(hf, False, hf=True)
    ours.zero_grad(set_to_none=True)
    hf.zero_grad(set_to_none=True)
    lo = ours_loss(ours, samples)
    lo.backward()
    lh = hf_loss(hf, hf_inputs(processor, hf.config, samples))
    lh.backward()
    g1, g2 = ours.query_tokens.grad, hf.query_tokens.grad
    rel = ((g1 - g2).norm() / g2.norm().clamp(min=1e-12)).item()
    ours.zero_grad(set_to_none=True)
    hf.zero_grad(set_to_none=True)
    return abs(lo.item() - lh.item()), rel


def per_sample_dropout_cost(model, samples: dict, reps: int) -> str:
    """Our step with the training loader's per-sample dropout keys against the same step
    with plain dropout (Q-Former dropout as in the checkpoint's config), interleaved after
    3 warm-up steps each; the cost is the median of the per-round CPU-time ratios (a
    shared machine's slow phases hit both steps of a round)."""
    from lavis_ib.common.dropout_keys import FIELD, dropout_keys

    keyed = {**samples, FIELD: dropout_keys(0, 0, range(len(samples["text_input"])))}
    opt = optimizer(model)
    steps = {"plain": make_step(ours_loss, model, samples, opt),
             "keyed": make_step(ours_loss, model, keyed, opt)}
    wall, cpu = common.interleaved(steps, reps=max(reps, 6), warmup=3)
    ratio = common.median([k / p for k, p in zip(cpu["keyed"], cpu["plain"])])
    return (f"per-sample dropout: step CPU {common.median(cpu['keyed']):.4f}s vs plain "
            f"{common.median(cpu['plain']):.4f}s, median per-round ratio {ratio:.3f} "
            f"({100 * (ratio - 1):+.1f}%); wall {common.median(wall['keyed']):.4f}s vs "
            f"{common.median(wall['plain']):.4f}s")


def child(side: str, directory: str, n: int, image_size: int) -> dict:
    """Peak-memory measurement of one side in this (fresh) process."""
    samples = batch(n, image_size)
    if side == "ours":
        model = load_ours(directory)
        inputs, loss_fn = samples, ours_loss
    else:
        model, processor = load_hf(directory)
        inputs, loss_fn = hf_inputs(processor, model.config, samples), hf_loss
    set_mode(model, True, hf=side == "hf")
    step = make_step(loss_fn, model, inputs, optimizer(model))
    step()  # AdamW state now exists; its allocation is not part of a step
    growth, before = common.peak_growth(step, repeats=2)
    return {"side": side, "growth_mb": growth, "before_mb": before,
            "process_peak_mb": common.peak_mb()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--batch", type=int, default=None, help="samples per step (2; smoke 2)")
    parser.add_argument("--reps", type=int, default=None, help="timed steps per side (5)")
    parser.add_argument("--dir", default=None, help="checkpoint folder (written if missing)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--child", choices=["ours", "hf"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    size = "smoke" if args.smoke else "bench"
    n = args.batch or 2
    reps = args.reps or (2 if args.smoke else 4)
    directory = args.dir or default_dir(size)
    image_size = common.SIZES[size]["vision"]["image_size"]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        torch.manual_seed(0)
        print(json.dumps(child(args.child, directory, n, image_size)))
        return 0

    common.write_checkpoint(directory, size)
    torch.manual_seed(0)
    ours = load_ours(directory)
    hf, processor = load_hf(directory)
    samples = batch(n, image_size)
    loss_diff, grad_rel = check(ours, hf, processor, samples)
    print(f"check: |loss diff| {loss_diff:.2e}, query-token grad relative diff {grad_rel:.2e}")
    if loss_diff > 1e-4 or grad_rel > 1e-3:
        print("FAILED: the two models disagree; timings would compare different computations.")
        return 1

    set_mode(ours, True)
    set_mode(hf, True, hf=True)
    steps = {"lavis_ib": make_step(ours_loss, ours, samples, optimizer(ours)),
             "transformers": make_step(hf_loss, hf, hf_inputs(processor, hf.config, samples),
                                       optimizer(hf))}
    times, cpu = common.interleaved(steps, reps=reps, warmup=1)
    names = list(steps)
    dropout_line = per_sample_dropout_cost(ours, samples, reps)
    del ours, hf, steps  # free this process before the memory subprocesses run
    extra = ["--batch", str(n), "--dir", directory] + (["--smoke"] if args.smoke else [])
    if args.threads:
        extra += ["--threads", str(args.threads)]
    mem = {side: common.run_child(__file__, ["--child", side, *extra]) for side in ("ours", "hf")}

    med = {k: (common.median(times[k]), common.median(cpu[k])) for k in names}
    rows = [[name, med[name][0], med[name][1], n / med[name][0], mem[side]["growth_mb"],
             mem[side]["process_peak_mb"]]
            for name, side in (("lavis_ib", "ours"), ("transformers", "hf"))]
    print(f"machine: {common.machine()}")
    print(f"config: {size}, batch {n}, {reps} timed steps per side (interleaved, median)")
    print(common.table(["model", "step wall s", "step CPU s", "samples/s", "peak step MiB",
                        "process peak MiB"], rows))
    wall_ratio = med["transformers"][0] / med["lavis_ib"][0]
    cpu_ratio = med["transformers"][1] / med["lavis_ib"][1]
    mem_ratio = mem["ours"]["growth_mb"] / max(mem["hf"]["growth_mb"], 1e-9)
    proc_ratio = mem["ours"]["process_peak_mb"] / mem["hf"]["process_peak_mb"]
    print(dropout_line)
    print(f"summary: time ratio (transformers/ours, >1 = ours faster) wall {wall_ratio:.2f}x, "
          f"CPU {cpu_ratio:.2f}x; peak step memory ratio (ours/transformers, <1 = ours "
          f"smaller) {mem_ratio:.2f}, process peak ratio {proc_ratio:.2f}; loss diff {loss_diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m lavis_ib.predict`: answer a prompt about images or a video, or rank candidates.

    python -m lavis_ib.predict --model instructblip:vicuna7b --options pretrained=/ckpt/dir \\
        --image photo.jpg --prompt "What is unusual about this image?"
    python -m lavis_ib.predict --model instructblip:tiny_vicuna --image a.png b.png \\
        --prompt "Is this a cat? Answer:" --candidates yes,no

Generation prints one line per input (`path<TAB>answer`); with `--candidates` every
candidate is printed with its summed log-probability, best first.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from lavis_ib.common.entry import run_entry
from lavis_ib.common.errors import ConfigError, DataError, LavisIbError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lavis_ib.predict", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="NAME:TYPE, e.g. instructblip:vicuna7b")
    p.add_argument("--options", nargs="+", default=[],
                   help="model config overrides key=value, e.g. pretrained=/path/to/dir")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", nargs="+", help="one or more image files")
    src.add_argument("--video", help="a video file (4 frames are sampled uniformly)")
    p.add_argument("--prompt", required=True, help="the instruction")
    p.add_argument("--candidates", help="comma-separated answers to rank instead of generating")
    p.add_argument("--no-eos", action="store_true",
                   help="rank candidates without scoring EOS after them (LAVIS's Vicuna setting)")
    p.add_argument("--num-beams", type=int, default=5)
    p.add_argument("--max-length", type=int, default=30)
    p.add_argument("--min-length", type=int, default=1)
    p.add_argument("--repetition-penalty", type=float, default=1.5)
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name, sep, model_type = args.model.partition(":")
    if not sep or not name or not model_type:
        raise ConfigError(f"--model '{args.model}': write NAME:TYPE, e.g. instructblip:vicuna7b.")
    candidates = None
    if args.candidates is not None:
        candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
        if not candidates:
            raise ConfigError("--candidates: give at least one comma-separated answer.")

    for path in ([args.video] if args.video else args.image):   # before the (slow) model load
        if not os.path.isfile(path):
            raise DataError(f"--{'video' if args.video else 'image'} '{path}' does not exist.")

    from lavis_ib.common.project_files import model_overrides
    from lavis_ib.media_inputs import load_images, load_video
    from lavis_ib.models.loading import load_model_and_preprocess

    model, vis, _ = load_model_and_preprocess(name, model_type, is_eval=True, device=args.device,
                                              **model_overrides(args.options))
    eval_proc = vis.get("eval")
    if eval_proc is None:
        raise LavisIbError(f"model type '{model_type}' has no eval image processor in its config.")
    if args.video:
        image, labels = load_video(args.video, eval_proc)[None], [args.video]
    else:
        image, labels = load_images(args.image, eval_proc), list(args.image)
    samples = {"image": image.to(model.device), "prompt": args.prompt}
    if candidates:
        scores, _ = model.score_candidates(samples, candidates, append_eos=not args.no_eos)
        for label, row in zip(labels, scores.tolist()):
            print(label)
            for score, cand in sorted(zip(row, candidates), key=lambda x: -x[0]):
                print(f"  {score:10.4f}  {cand}")
        return 0
    answers = model.generate(samples, num_beams=args.num_beams, max_length=args.max_length,
                             min_length=args.min_length,
                             repetition_penalty=args.repetition_penalty)
    for label, answer in zip(labels, answers):
        print(f"{label}\t{answer}")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main, None, "python -m lavis_ib.predict"))

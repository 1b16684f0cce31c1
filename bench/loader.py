"""Training-loader benchmark: `MixtureLoader` samples/s on the fixture mixture.

The six held-in datasets of the demo (coco_caption, textcaps, ok_vqa, aok_vqa, ocr_vqa,
llava_detail) are written by `lavis_ib.testing.fixtures.write_fixtures` in their real
on-disk formats and built by their registered builders with the default processors (224 px
`blip2_image_train`, templates, OCR prefixes). Compared (2 workers per DataLoader):

* ``lavis_ib``: `MixtureLoader(..., num_workers=2)`: one DataLoader for all map-style
  datasets, its batch sampler walking the step -> dataset choices;
* ``lavis-style``: LAVIS's layout, one DataLoader per dataset (2 workers each, infinite
  shuffled sampler so no epoch restarts), the dataset of each step drawn from the same
  `Mixer` sequence;
* ``lavis_ib, 0 workers``: loading in the main process (reference).

Each round builds a fresh loader, times the first batch (worker start-up), runs warm-up
steps, then times `--steps` steps; rounds alternate between the sides; medians.

    python bench/loader.py            # about 30 s on 2 cores
    python bench/loader.py --smoke    # tiny sizes (the test suite)

Last line: ``summary: samples/s ratio (lavis_ib / lavis-style) X.XXx, ...``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch
from torch.utils.data import DataLoader, RandomSampler

import common

DATASETS = ("coco_caption", "textcaps", "ok_vqa", "aok_vqa", "ocr_vqa", "llava_detail")
RATIOS = {"ok_vqa": 2.0, "aok_vqa": 0.5}  # the paper's hand adjustments (demo_tiny.yaml)


def build_train_sets(root: str, image_size: int) -> dict:
    """{name: train dataset} of the fixture copies, default processors at `image_size`."""
    from omegaconf import OmegaConf

    from lavis_ib.common.registry import registry
    from lavis_ib.testing.fixtures import write_fixtures

    overrides = write_fixtures(root, list(DATASETS))
    sets = {}
    for name in DATASETS:
        cls = registry.get_builder_class(name)
        cfg = OmegaConf.merge(OmegaConf.load(cls.default_config_path()).datasets[name], overrides[name])
        for split in (cfg.get("vis_processor") or {}):
            if "image_size" in cfg.vis_processor[split]:
                cfg.vis_processor[split].image_size = image_size
        sets[name] = cls(cfg).build_datasets()["train"]
    return sets


class LavisStyleLoader:
    """One DataLoader per dataset (LAVIS's MultiIterLoader layout); `next_step` draws the
    dataset of each step from the same `Mixer` sequence as `MixtureLoader`."""

    def __init__(self, sets: dict, batch: int, workers: int, seed: int) -> None:
        from lavis_ib.datasets.mixing import Mixer

        self.mixer = Mixer({n: len(d) for n, d in sets.items()}, RATIOS, True, seed)
        self.iters = {}
        for name, ds in sets.items():
            sampler = RandomSampler(ds, num_samples=10 ** 8,
                                    generator=torch.Generator().manual_seed(seed))
            self.iters[name] = iter(DataLoader(ds, batch_size=batch, sampler=sampler,
                                               num_workers=workers, collate_fn=ds.collater))
        self.step = 0

    def next_step(self) -> list[dict]:
        name = self.mixer.choose(self.step)
        self.step += 1
        return [next(self.iters[name])]

    def close(self) -> None:
        for it in self.iters.values():
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown:
                shutdown()


def make(kind: str, sets: dict, batch: int, seed: int):
    from lavis_ib.datasets.loaders import MixtureLoader

    if kind == "lavis-style":
        return LavisStyleLoader(sets, batch, 2, seed)
    workers = 0 if kind.endswith("0 workers") else 2
    return MixtureLoader(sets, RATIOS, batch, batch, rank=0, world_size=1, seed=seed,
                         num_workers=workers)


def run_round(kind: str, sets: dict, batch: int, warmup: int, steps: int,
              seed: int) -> tuple[float, float]:
    """(seconds to the first batch, samples/s over `steps` steps after warm-up)."""
    from lavis_ib.datasets.loaders import num_samples

    start = time.perf_counter()
    loader = make(kind, sets, batch, seed)
    try:
        loader.next_step()
        first = time.perf_counter() - start
        for _ in range(warmup):
            loader.next_step()
        count, start = 0, time.perf_counter()
        for _ in range(steps):
            count += sum(num_samples(b) for b in loader.next_step())
        return first, count / (time.perf_counter() - start)
    finally:
        loader.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--batch", type=int, default=8, help="samples per step")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per round (100)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per side (3)")
    parser.add_argument("--root", default=None, help="fixture folder (default: a temp dir)")
    args = parser.parse_args(argv)
    steps = args.steps or (4 if args.smoke else 100)
    rounds = args.rounds or (1 if args.smoke else 3)
    warmup = 1 if args.smoke else 5
    image_size = 32 if args.smoke else 224
    torch.set_num_threads(1)  # the processors run in workers; one thread each, like training
    with tempfile.TemporaryDirectory() as tmp:
        sets = build_train_sets(args.root or os.path.join(tmp, "fixtures"), image_size)
        kinds = ["lavis_ib", "lavis-style", "lavis_ib, 0 workers"]
        results = {k: [] for k in kinds}
        for r in range(rounds):
            for kind in (kinds if r % 2 == 0 else kinds[::-1]):
                results[kind].append(run_round(kind, sets, args.batch, warmup, steps, seed=r))
    rows = []
    for kind in kinds:
        workers = {"lavis_ib": 2, "lavis-style": 2 * len(DATASETS), "lavis_ib, 0 workers": 0}[kind]
        rows.append([kind, workers, common.median([f for f, _ in results[kind]]),
                     common.median([s for _, s in results[kind]])])
    print(f"machine: {common.machine()}")
    print(f"config: {'smoke' if args.smoke else 'bench'}, {len(DATASETS)} datasets "
          f"({', '.join(DATASETS)}), {image_size} px, batch {args.batch}, {steps} timed steps "
          f"after {warmup} warm-up, {rounds} rounds per side (alternating, median)")
    print(common.table(["loader", "worker processes", "first batch s", "samples/s"], rows))
    ours, peer, zero = (r[3] for r in rows)
    print(f"summary: samples/s ratio (lavis_ib / lavis-style) {ours / peer:.2f}x with "
          f"{rows[0][1]} vs {rows[1][1]} worker processes; lavis_ib 2 workers {ours:.0f} "
          f"samples/s ({ours / zero:.2f}x of 0 workers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

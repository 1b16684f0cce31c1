"""The stage-1 model on the shipped retrieval projects: `retrieval_coco.yaml` and
`retrieval_flickr.yaml` composed with the tiny `blip2` type and pointed at fixture copies,
evaluated through `lavis-ib evaluate` in this process. metrics.json holds every recall,
and each image's rank and the recalls equal a brute-force reference written from the
protocol: the gallery is smaller than `k_test`, so every pair is scored ITM match logit +
ITC similarity, here through `blip2_image_text_matching`'s `forward` (pairs, no retrieval
interface), an image ranked by the best of its captions, a caption by its image.
"""
from __future__ import annotations

import json
import os

import pytest
import torch
from PIL import Image

from lavis_ib import load_model
from lavis_ib.common.paths import package_path
from lavis_ib.processors.image import BlipImageEvalProcessor
from lavis_ib.processors.text import BlipCaptionProcessor

# project: (dataset, evaluated split, the splits its entry lists)
CASES = {"retrieval_coco": ("coco_retrieval", "test", ("train", "val", "test")),
         "retrieval_flickr": ("flickr30k_retrieval", "test", ("val", "test"))}
RECALLS = ("txt_r1", "txt_r5", "txt_r10", "txt_r_mean", "img_r1", "img_r5", "img_r10",
           "img_r_mean", "r_mean")


def _options(name: str, splits, info: dict, out: str) -> list[str]:
    opts = ["model.model_type=tiny", f"run.output_dir={out}", "run.device=cpu", "run.amp=none",
            "run.num_workers=0", "run.distributed=none", "run.batch_size_eval=3",
            f"datasets.{name}.vis_processor.eval.image_size=32", f"datasets.{name}.feature_workers=0",
            f"datasets.{name}.feature_batch_size=2", f"datasets.{name}.text_batch_size=7",
            f"datasets.{name}.build_info.images.storage={info['images']['storage']}"]
    return opts + [f"datasets.{name}.build_info.annotations.{split}.storage="
                   f"{info['annotations'][split]['storage']}" for split in splits]


def reference(info: dict, split: str) -> tuple[list[int], dict[str, float]]:
    """(each image's 1-based text rank, the recalls) by brute force over every pair."""
    model = load_model("blip2_image_text_matching", "tiny", is_eval=True)
    same = load_model("blip2", "tiny", is_eval=True).state_dict()
    assert all(torch.equal(v, same[k]) for k, v in model.state_dict().items())
    with open(info["annotations"][split]["storage"]) as f:
        rows = json.load(f)
    to_tensor, clean = BlipImageEvalProcessor(image_size=32), BlipCaptionProcessor()
    images = torch.stack([to_tensor(Image.open(os.path.join(info["images"]["storage"], r["image"]))
                                    .convert("RGB")) for r in rows])
    texts = [clean(c) for r in rows for c in r["caption"]]
    owner = [i for i, r in enumerate(rows) for _ in r["caption"]]
    n, m = len(rows), len(texts)
    pairs = {"image": images.repeat_interleave(m, 0), "text_input": texts * n}
    score = (model(pairs, match_head="itm")[:, 1] + model(pairs, match_head="itc")[:, 0]).view(n, m)
    txt_rank = []
    for i in range(n):
        order = torch.argsort(score[i], descending=True).tolist()
        txt_rank.append(min(order.index(t) for t in range(m) if owner[t] == i))
    img_rank = [torch.argsort(score[:, t], descending=True).tolist().index(owner[t]) for t in range(m)]

    def recall(ranks, k):
        return 100.0 * sum(r < k for r in ranks) / len(ranks)

    out = {f"{side}_r{k}": recall(ranks, k) for side, ranks in (("txt", txt_rank), ("img", img_rank))
           for k in (1, 5, 10)}
    for side in ("txt", "img"):
        out[f"{side}_r_mean"] = sum(out[f"{side}_r{k}"] for k in (1, 5, 10)) / 3
    out["r_mean"] = (out["txt_r_mean"] + out["img_r_mean"]) / 2
    return [r + 1 for r in txt_rank], out


@pytest.mark.parametrize("project", sorted(CASES))
def test_tiny_stage1_on_the_retrieval_project(project, fixture_root, tmp_path):
    from lavis_ib.cli import evaluate as evaluate_cli

    name, split, splits = CASES[project]
    info = fixture_root.overrides[name]["build_info"]
    path = package_path(f"configs/projects/blip2/{project}.yaml")
    options = _options(name, splits, info, str(tmp_path))
    assert evaluate_cli.main(["--cfg-path", path, "--options", *options]) == 0
    folder = tmp_path / "eval" / f"{name}_{split}"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(RECALLS) <= set(metrics)
    with open(folder / "predictions.jsonl") as f:
        ranks = [json.loads(line)["txt_rank"] for line in f]
    want_ranks, want = reference(info, split)
    assert metrics["num_images"] == len(want_ranks) and ranks == want_ranks
    for key in RECALLS:
        assert metrics[key] == pytest.approx(want[key], abs=1e-9), key

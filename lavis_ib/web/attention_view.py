"""The attention view of the web demo: where the Q-Former's queries look in the image for
two instructions, side by side (`model.qformer_attention`), drawn over the image as the
model receives it. Both maps share one colour scale, so the stronger one looks stronger."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

SIDE = 320   # pixels per frame of the drawn overlay


@dataclass
class AttentionPair:
    """The (T, rows, cols) patch maps of two instructions (`heatmap()[0]` of each
    `qformer_attention` call), their CLS shares and how far apart the maps are."""
    instructions: tuple[str, str]
    maps: tuple[torch.Tensor, torch.Tensor]
    cls_shares: tuple[float, float]

    @property
    def difference(self) -> float:
        """Half the summed absolute difference of the two maps, each normalised to sum
        to 1 over the patches: 0 when the queries look at the same places, 1 when at
        disjoint ones (averaged over frames)."""
        a, b = (m / m.sum(dim=(-2, -1), keepdim=True) for m in self.maps)
        return float(0.5 * (a - b).abs().sum(dim=(-2, -1)).mean())


def displayed_frames(image: torch.Tensor, processor: Any) -> np.ndarray:
    """(T, H, W, 3) uint8: the processed image (1,C,H,W) or video (1,C,T,H,W) with its
    normalisation undone, i.e. the pixels the ViT reads."""
    frames = image[0] if image.dim() == 4 else image[0].permute(1, 0, 2, 3)
    frames = frames.unsqueeze(0) if frames.dim() == 3 else frames          # (T, C, H, W)
    mean = torch.tensor(processor.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(processor.std, dtype=torch.float32).view(1, -1, 1, 1)
    pixels = (frames.detach().float().cpu() * std + mean).clamp(0, 1)
    return (pixels.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def overlay(frames: np.ndarray, maps: torch.Tensor, top: float) -> Any:
    """One PIL image: the frames side by side, each tinted by its patch map (colour scale
    0..`top`, matplotlib's 'inferno'), patches drawn as blocks (no smoothing)."""
    from matplotlib import colormaps
    from PIL import Image

    cmap = colormaps["inferno"]
    tiles = []
    for frame, heat in zip(frames, maps):
        base = Image.fromarray(frame).resize((SIDE, SIDE), Image.Resampling.BICUBIC)
        scaled = (heat.float().numpy() / top) if top > 0 else heat.float().numpy() * 0
        colour = (cmap(np.clip(scaled, 0, 1))[..., :3] * 255).astype(np.uint8)
        colour = Image.fromarray(colour).resize((SIDE, SIDE), Image.Resampling.NEAREST)
        tiles.append(Image.blend(base, colour, 0.55))
    canvas = Image.new("RGB", (SIDE * len(tiles) + 4 * (len(tiles) - 1), SIDE), "white")
    for i, tile in enumerate(tiles):
        canvas.paste(tile, (i * (SIDE + 4), 0))
    return canvas


def attention_pair(model: Any, samples: dict, first: str, second: str,
                   layer: int | None = None) -> AttentionPair:
    """The maps of both instructions, averaged over heads and queries and over the
    cross-attention layers (or one Q-Former `layer`)."""
    maps, shares = [], []
    for text in (first, second):
        found = model.qformer_attention(samples, prompt=text)
        maps.append(found.heatmap(layer)[0])
        shares.append(float(found.cls_share(layer)[0].mean()))
    return AttentionPair((first, second), (maps[0], maps[1]), (shares[0], shares[1]))

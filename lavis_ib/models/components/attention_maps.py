"""Where the Q-Former's queries look: the cross-attention probabilities from the queries to
the image tokens, recorded on an explicit path for one call (SDPA returns no weights), to
show that different instructions make the queries extract different visual features."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from lavis_ib.common.errors import LavisIbError


@dataclass
class CrossAttentionMaps:
    """The cross-attention probabilities of one `qformer_attention` call.

    `weights[l]` is layer `layers[l]`'s (B, T, H, Q, N) probabilities (fp32, on the CPU):
    B samples, T frames (1 for images), H heads, Q queries, N image tokens of which the
    first is the ViT's CLS token and the other `rows x cols` are the patches in raster
    order. Each query's row sums to 1 over the N tokens.
    """

    layers: list[int]
    weights: list[torch.Tensor]
    grid: tuple[int, int]
    instructions: list[str]

    def heatmap(self, layer: int | None = None, query: int | None = None) -> torch.Tensor:
        """(B, T, rows, cols) attention on each patch: the probability mass averaged over
        heads and queries (or one `query`), over the cross-attention layers or one Q-Former
        `layer` index. The CLS token's share is left out (`cls_share`), so a map sums
        to 1 - cls_share."""
        stack = self._select(layer)
        if query is not None:
            if not 0 <= query < stack.shape[-2]:
                raise LavisIbError(f"query {query} is not one of the {stack.shape[-2]} queries.")
            stack = stack[..., query:query + 1, :]
        mean = stack.mean(dim=(0, 3, 4))          # over layers, heads, queries
        rows, cols = self.grid
        return mean[..., 1:].reshape(*mean.shape[:2], rows, cols)

    def cls_share(self, layer: int | None = None) -> torch.Tensor:
        """(B, T) attention mass on the CLS token (averaged like `heatmap`)."""
        return self._select(layer).mean(dim=(0, 3, 4))[..., 0]

    def _select(self, layer: int | None) -> torch.Tensor:
        if layer is None:
            return torch.stack(self.weights)
        if layer not in self.layers:
            raise LavisIbError(f"Q-Former layer {layer} has no cross-attention; the layers "
                               f"that read the image are {self.layers}.")
        return self.weights[self.layers.index(layer)][None]


def _probabilities(module: torch.nn.Module, queries: torch.Tensor,
                   image: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) of an `Attention` module, computed in fp32 from its own
    projections: the weights SDPA used, which it does not return."""
    q = module._split(module.q(queries)).float()
    k = module._split(module.k(image.to(queries.dtype))).float()
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)


@contextlib.contextmanager
def recording_cross_attention(qformer: torch.nn.Module) -> Iterator[dict[int, torch.Tensor]]:
    """Within the block, each cross-attention layer's probabilities of every Q-Former
    call are appended to `recorded[layer index]` (a forward hook; removed on exit)."""
    recorded: dict[int, list[torch.Tensor]] = {}
    handles = []

    def hook_for(index: int):
        def hook(module, args, kwargs, output):
            context = kwargs.get("context", args[1] if len(args) > 1 else None)
            with torch.no_grad():
                recorded.setdefault(index, []).append(
                    _probabilities(module, args[0], context).cpu())
        return hook

    for index, layer in enumerate(qformer.layers):
        if layer.cross_attn is not None:
            handles.append(layer.cross_attn.register_forward_hook(hook_for(index),
                                                                  with_kwargs=True))
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


class QFormerAttentionMixin:
    """`qformer_attention(samples)` for the Q-Former models (`QFormerLLM`)."""

    def qformer_attention(self, samples: dict[str, Any],
                          prompt: str | Sequence[str] | None = None) -> CrossAttentionMaps:
        """The queries' cross-attention to the image patches for these samples and
        instructions (`prompt`, else the batch's `prompt` / `text_input` as `generate`
        reads them). InstructBLIP's Q-Former reads the instruction, so the maps change
        with it; BLIP-2's does not. Runs ViT and Q-Former only (no LLM), without gradients.

        Returns:
            `CrossAttentionMaps`; `.heatmap()` is the (B, T, rows, cols) picture.
        """
        image = samples.get("image") if isinstance(samples, dict) else None
        if not isinstance(image, torch.Tensor) or image.dim() not in (4, 5):
            raise LavisIbError("qformer_attention(samples): samples['image'] must be a "
                               "(B, C, H, W) or (B, C, T, H, W) tensor from the model's "
                               "image processor.")
        batch = {**samples, "prompt": prompt} if prompt is not None else samples
        instructions = self._prompts(batch)
        patch = self.vision_spec.patch_size
        rows, cols = image.shape[-2] // patch, image.shape[-1] // patch
        frames = image.shape[2] if image.dim() == 5 else 1
        with torch.no_grad(), recording_cross_attention(self.qformer) as recorded:
            self.encode(image, instructions)
        layers = sorted(recorded)
        weights = []
        for index in layers:
            probs = torch.cat(recorded[index])            # (B*T, H, Q, N)
            if probs.shape[-1] != 1 + rows * cols:
                raise LavisIbError(f"{probs.shape[-1]} image tokens do not form CLS + a "
                                   f"{rows}x{cols} patch grid.")
            weights.append(probs.reshape(image.shape[0], frames, *probs.shape[1:]))
        return CrossAttentionMaps(layers, weights, (rows, cols), instructions)

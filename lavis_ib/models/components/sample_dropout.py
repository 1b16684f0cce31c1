"""Dropout whose mask is a function of the sample, not of the process that runs it.

torch's dropout draws from the process's generator, so the same sample gets another mask
when the global batch is split differently over processes or accumulation steps, and the
gradients differ; here each mask is a hash of the sample's key (docs/determinism.md).
"""
from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F
from torch import nn

_MASK32 = 0xFFFFFFFF
_MUL = 0x45D9F3B        # < 2**27: a 32-bit value times it stays below 2**59
_GOLDEN = 0x9E3779B9
#: bits of each dimension after the batch one in an element's packed coordinates (three:
#: heads, rows, keys); fixed widths, so an element's decision does not change with the
#: padded length of the batch it sits in (right padding: the Q-Former's instruction tokens)
_WIDTHS = {1: (32,), 2: (16, 16), 3: (8, 12, 12)}


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer on int64 values in [0, 2**32): x ^= x >> 16; x *= 0x45d9f3b;
    twice; x ^= x >> 16. Every product stays below 2**63, so int64 arithmetic is exact
    and the result the same on CPU and GPU."""
    x = ((x >> 16) ^ x) * _MUL & _MASK32
    x = ((x >> 16) ^ x) * _MUL & _MASK32
    return (x >> 16) ^ x


def site_id(name: str) -> int:
    """A stable 32-bit id of a dropout site from its module path."""
    return zlib.crc32(name.encode())


_INDEX_CACHE: dict[tuple, torch.Tensor] = {}


def _coordinates(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The packed 32-bit coordinates (int64) of every element of one sample of `shape`
    (the dims after the batch one; widths `_WIDTHS`)."""
    key = (shape, str(device))
    index = _INDEX_CACHE.get(key)
    if index is None:
        widths = _WIDTHS.get(len(shape))
        if widths is None or any(n > 1 << w for n, w in zip(shape, widths)):
            raise ValueError(f"sample dropout packs 1-3 dimensions per sample into 32 bits "
                             f"({_WIDTHS}); got {shape}")
        index = torch.zeros(shape, dtype=torch.int64, device=device)
        shift = 32
        for j, (n, w) in enumerate(zip(shape, widths)):
            shift -= w
            view = [1] * len(shape)
            view[j] = n
            index = index + (torch.arange(n, dtype=torch.int64, device=device) << shift).view(view)
        if len(_INDEX_CACHE) > 256:
            _INDEX_CACHE.clear()
        _INDEX_CACHE[key] = index
    return index


def keep_mask(keys: torch.Tensor, site: int, shape: tuple[int, ...], p: float,
              device: torch.device) -> torch.Tensor:
    """Boolean (B, *shape): element kept with probability 1 - p, decided by
    hash(keys[b], site, coordinates); B = len(keys). The hash is one `_mix` of the packed
    coordinates xor a per-(sample, site) word: counter-based and stateless, so a recomputed
    layer (gradient checkpointing) draws the same mask and no generator state travels
    between processes. `keys` come from `lavis_ib.common.dropout_keys`."""
    keys = keys.to(device=device, dtype=torch.int64)
    word = _mix(_mix(keys[:, 0] ^ (site & _MASK32)) ^ keys[:, 1])   # per (sample, site)
    word = word.view(-1, *(1,) * len(shape))
    return _mix(_coordinates(tuple(shape), device) ^ word) >= int(round(p * 2 ** 32))


def frame_keys(keys: torch.Tensor, rows: int) -> torch.Tensor:
    """`keys` of B samples for a batch of `rows` = B x T rows (video frames flattened
    sample-major): frame t of sample b gets its own key, derived from (key b, t)."""
    if rows == keys.shape[0]:
        return keys
    if keys.shape[0] == 0 or rows % keys.shape[0]:
        raise ValueError(f"{keys.shape[0]} dropout keys for a batch of {rows} rows")
    frames = rows // keys.shape[0]
    t = torch.arange(frames, dtype=torch.int64, device=keys.device).repeat(keys.shape[0])
    keys = keys.repeat_interleave(frames, dim=0)
    return torch.stack([_mix(keys[:, 0] ^ (t * _GOLDEN & _MASK32)),
                        _mix((keys[:, 1] + t) & _MASK32)], dim=1)


def derive_keys(keys: torch.Tensor, tag: int) -> torch.Tensor:
    """Keys for another pass over the same samples (a second forward of the same modules
    that must not repeat the first pass's masks): `tag` 1, 2, ... per pass."""
    tag = int(tag) & _MASK32
    return torch.stack([_mix(keys[:, 0] ^ tag),
                        _mix((keys[:, 1] + (tag * _GOLDEN & _MASK32)) & _MASK32)], dim=1)


class SampleDropout(nn.Dropout):
    """`nn.Dropout` that, given per-sample `keys` in training, draws each sample's mask
    from its key (`keep_mask`); without keys (or in eval mode, or with p = 0) it is
    `nn.Dropout`. `site` is set by the owning module from the module path."""

    site: int = 0

    def forward(self, x: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training or self.p == 0.0 or keys is None:
            return super().forward(x)
        if self.p >= 1.0:
            return torch.zeros_like(x)
        keep = keep_mask(keys, self.site, tuple(x.shape[1:]), self.p, x.device)
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))


def name_sites(module: nn.Module) -> None:
    """Give every `SampleDropout` below `module` the site id of its module path."""
    for name, child in module.named_modules():
        if isinstance(child, SampleDropout):
            child.site = site_id(name)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
              dropout: SampleDropout, keys: torch.Tensor | None) -> torch.Tensor:
    """Scaled dot-product attention (B, H, Nq, hd). With per-sample `keys` and attention
    dropout active the probabilities are computed here and dropped per sample (SDPA takes
    no generator); otherwise it is SDPA with its own dropout. `mask`: boolean, True where
    a key may be attended to."""
    if keys is None or not dropout.training or dropout.p == 0.0:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout.p if dropout.training else 0.0)
    scores = (q @ k.transpose(-1, -2)).float() * (q.shape[-1] ** -0.5)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = dropout(scores.softmax(dim=-1), keys)
    return probs.to(v.dtype) @ v

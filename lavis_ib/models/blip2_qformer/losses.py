"""BLIP-2 stage 1's three losses as functions of features (ITC, ITM's negatives, ITG).

Each takes this rank's rows and the world batch's columns, so the model alone decides how
the columns were gathered; the tests hold each against a transcription of LAVIS's formulas.
`positives[i, j]` says that world sample j shows the image of local sample i (`_positives`)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

ITC_SMOOTHING = 0.1   # both directions
ITG_SMOOTHING = 0.1
_ITM_STREAM = 0x69746D   # keeps the ITM draws apart from other seeded streams


def upcast(tensor: torch.Tensor) -> torch.Tensor:
    """fp16 / bf16 -> fp32 for a softmax or a loss; fp32 and fp64 stay as they are."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def similarities(image_feats: torch.Tensor, text_feat_all: torch.Tensor,
                 text_feat: torch.Tensor, image_feats_all: torch.Tensor,
                 temp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sim_i2t (b, N), sim_t2i (b, N)): the best query's cosine with the text [CLS]
    feature, divided by the temperature. Features are normalised; image ones (., Q, d)."""
    sim_i2t = torch.matmul(image_feats.unsqueeze(1), text_feat_all.unsqueeze(-1)).squeeze(-1)
    sim_t2i = torch.matmul(text_feat.unsqueeze(1).unsqueeze(1),
                           image_feats_all.transpose(1, 2)).squeeze(-2)
    return sim_i2t.max(-1).values / temp, sim_t2i.max(-1).values / temp


def itc_loss(sim_i2t: torch.Tensor, sim_t2i: torch.Tensor, positives: torch.Tensor,
             smoothing: float = ITC_SMOOTHING) -> torch.Tensor:
    """Per-sample ITC loss (b,): the mean of both directions' cross-entropy against the
    positives spread evenly, smoothed towards uniform over the world batch (with one
    positive per row this is `cross_entropy(label_smoothing=smoothing)`)."""
    targets = positives.to(upcast(sim_i2t).dtype)
    targets = targets / targets.sum(1, keepdim=True)
    targets = (1.0 - smoothing) * targets + smoothing / targets.shape[1]
    i2t = -(F.log_softmax(upcast(sim_i2t), dim=1) * targets).sum(1)
    t2i = -(F.log_softmax(upcast(sim_t2i), dim=1) * targets).sum(1)
    return (i2t + t2i) / 2


def negative_weights(sim: torch.Tensor, positives: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax of `sim` with the positives masked out (b, N), rows that have a negative
    (b,)). A row without any negative gets weights it is never drawn from."""
    has_negative = (~positives).any(1)
    masked = sim.detach().float().masked_fill(positives, float("-inf"))
    masked = masked.masked_fill(~has_negative[:, None], 0.0)
    return F.softmax(masked, dim=1), has_negative


def sample_generators(base: int, indices: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per sample, seeded by (`base`, the sample's world index) only."""
    out = []
    for index in indices:
        seq = np.random.SeedSequence([_ITM_STREAM, int(base) % 2 ** 63, int(index)])
        seed = int(seq.generate_state(1, dtype=np.uint64)[0] % 2 ** 63)
        out.append(torch.Generator().manual_seed(seed))
    return out


def draw_negatives(weights_t2i: torch.Tensor, weights_i2t: torch.Tensor,
                   has_negative: torch.Tensor, generators: Sequence[torch.Generator],
                   own: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(negative image index, negative text index) per local sample, world indices.

    Sample i draws its image then its text with `torch.multinomial(weights[i], 1)` from
    `generators[i]`, on the CPU (the same draws on every device). A row without a
    negative keeps its own index `own[i]` (the model gives those pairs no weight)."""
    w_t2i, w_i2t = weights_t2i.detach().float().cpu(), weights_i2t.detach().float().cpu()
    has_negative = has_negative.cpu()
    images, texts = [], []
    for i, gen in enumerate(generators):
        if not bool(has_negative[i]):
            images.append(int(own[i]))
            texts.append(int(own[i]))
            continue
        images.append(int(torch.multinomial(w_t2i[i], 1, generator=gen)))
        texts.append(int(torch.multinomial(w_i2t[i], 1, generator=gen)))
    return torch.tensor(images, dtype=torch.long), torch.tensor(texts, dtype=torch.long)


def itg_loss_sum(logits: torch.Tensor, labels: torch.Tensor,
                 smoothing: float = ITG_SMOOTHING) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed next-token loss, number of target tokens): logits at position t predict
    label t + 1; labels -100 are not targets; label smoothing over the whole vocabulary."""
    shifted = upcast(logits[:, :-1])
    targets = labels[:, 1:]
    loss = F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), targets.reshape(-1),
                           ignore_index=-100, label_smoothing=smoothing, reduction="sum")
    return loss, (targets != -100).sum()

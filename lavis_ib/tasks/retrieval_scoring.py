"""Scores of every image-text pair of a retrieval split, with the work split over ranks.

LAVIS's protocol (ITC for every pair, ITM re-ranking of the top k), split by image so no
rank holds all ViT features and 1 or N processes give the same scores (`GalleryScorer`)."""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import torch

from lavis_ib.common.dist_utils import all_gather_objects, get_rank, get_world_size
from lavis_ib.common.errors import DataError, LavisIbError
from lavis_ib.datasets.loaders import eval_loader, eval_shard
from lavis_ib.tasks.metrics.retrieval import best_rank, positions

logger = logging.getLogger(__name__)
FILL = -100.0    # the score of a pair outside a query's re-ranked top k (LAVIS's value)
TOP_SHOWN = 5    # texts listed per image in the predictions


@dataclasses.dataclass(frozen=True)
class RetrievalSettings:
    """How a retrieval split is scored (dataset entry keys, docs/protocol.md)."""

    k_test: int = 128
    text_max_length: int = 35
    feature_batch_size: int = 32
    text_batch_size: int = 256
    feature_workers: int = 2
    offload_image_embeds: bool = False


@dataclasses.dataclass
class GalleryRanks:
    """0-based ranks of one split, by global image / caption index.

    Attributes:
        txt_rank: image -> its best caption's position in its image->text row.
        top_texts: image -> the caption indices of its row's first `TOP_SHOWN`.
        img_rank: caption -> its image's position in its text->image row.
        left_out: images left out of the gallery (unreadable), with their captions.
    """

    txt_rank: dict[int, int]
    top_texts: dict[int, list[int]]
    img_rank: dict[int, int]
    left_out: list[int]


def similarity(image_feats: torch.Tensor, text_feats: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """(N, M): for each image and caption, the best over queries of query . caption."""
    rows = [torch.matmul(image_feats[i:i + chunk], text_feats.t()).amax(dim=1)
            for i in range(0, image_feats.shape[0], chunk)]
    return torch.cat(rows) if rows else image_feats.new_zeros((0, text_feats.shape[0]))


def best_first(row: torch.Tensor) -> torch.Tensor:
    """Row indices best first, equal scores with the later index first (metrics.retrieval)."""
    return torch.sort(row, stable=True).indices.flip(0)


def _cat(parts: list[Any]) -> Any:
    parts = [p for p in parts if p is not None and p.shape[0]]
    return torch.cat(parts) if parts else None


class GalleryScorer:
    """Runs the scoring of one split on this rank (every rank must call `run`).

    The protocol is LAVIS's (BLIP-2 paper Sec. 4.4): the ITC similarity of every pair (the
    best over the image's query features of query . caption feature), then each query's
    top `k_test` re-ranked by ITM match logit + similarity; every other pair scores -100.

    The split is by image: each rank extracts the features of its contiguous share of the
    images and keeps their ViT features (N/ranks of them, never all); the small query and
    caption features are gathered, so every rank computes the same similarities. An
    image's row (image->text) is re-ranked by its owner; a caption's row (text->image) by
    the rank owning the caption, which sends each of its top-k pairs to the owner of the
    pair's image to be scored and gets the logits back. Every pair is scored exactly once,
    so 1 and N processes give the same scores up to floating-point summation order (LAVIS
    instead keeps all ViT features on every rank and sums score matrices filled with -100).

    Args:
        model: implements `retrieval_image_features(images) -> (image_embeds (N, P, D),
            image_feats (N, Q, d))`, `retrieval_text_features(texts, max_length) ->
            (input_ids, attention_mask, text_feats (M, d))` and `itm_match_logit(
            image_embeds, input_ids, attention_mask) -> (k,)`.
        dataset: a `RetrievalEvalDataset` (`text`, `img2txt`, samples with ``index``).
        settings: the split's `RetrievalSettings`.
        device: where the model runs.
        where: name of the split, for messages.
    """

    def __init__(self, model: Any, dataset: Any, settings: RetrievalSettings,
                 device: torch.device, where: str) -> None:
        self.model, self.dataset, self.settings = model, dataset, settings
        self.device, self.where = device, where
        self.rank, self.world = get_rank(), get_world_size()

    # -- features -------------------------------------------------------------------------
    def image_features(self) -> tuple[list[int], Any, Any]:
        """(this rank's readable image indices, their ViT features, their query features)."""
        loader = eval_loader(self.dataset, self.settings.feature_batch_size, self.rank, self.world,
                             num_workers=self.settings.feature_workers)
        indices, embeds, feats = [], [], []
        for batch in loader:
            if not batch.get("index"):
                continue                      # every image of the batch was unreadable
            image_embeds, image_feats = self.model.retrieval_image_features(batch["image"].to(self.device))
            indices += [int(i) for i in batch["index"]]
            embeds.append(image_embeds.cpu() if self.settings.offload_image_embeds else image_embeds)
            feats.append(image_feats.float().cpu())
        return indices, _cat(embeds), _cat(feats)

    def text_features(self, texts: list[str]) -> tuple[Any, Any, Any]:
        """(input_ids, attention_mask, text_feats) of `texts`, on the CPU."""
        out: list[list[torch.Tensor]] = [[], [], []]
        length = self.settings.text_max_length
        for start in range(0, len(texts), self.settings.text_batch_size):
            chunk = texts[start:start + self.settings.text_batch_size]
            ids, mask, feats = self.model.retrieval_text_features(chunk, max_length=length)
            if tuple(ids.shape) != (len(chunk), length) or tuple(mask.shape) != tuple(ids.shape):
                raise LavisIbError(
                    f"{self.where}: {type(self.model).__name__}.retrieval_text_features must return "
                    f"input_ids and attention_mask padded to max_length, ({len(chunk)}, {length}); "
                    f"got {tuple(ids.shape)} and {tuple(mask.shape)}.")
            for part, value in zip(out, (ids, mask, feats.float())):
                part.append(value.cpu())
        return tuple(_cat(part) for part in out)

    # -- the split ------------------------------------------------------------------------
    def run(self) -> GalleryRanks:
        started = time.time()
        n_images = len(self.dataset)
        mine, embeds, my_feats = self.image_features()
        gathered = all_gather_objects((mine, my_feats))
        valid = [i for rank_mine, _ in gathered for i in rank_mine]       # ascending (contiguous shards)
        image_feats = _cat([f for _, f in gathered])
        if not valid:
            raise DataError(f"{self.where}: no readable image in the split; nothing to retrieve.")
        left_out = sorted(set(range(n_images)) - set(valid))
        texts = [t for i in valid for t in self.dataset.img2txt[i]]        # gallery order of captions
        image_pos = {i: p for p, i in enumerate(valid)}
        text_image = torch.tensor([image_pos[self.dataset.txt2img[t]] for t in texts])
        my_texts = eval_shard(len(texts), self.rank, self.world)
        parts = all_gather_objects(self.text_features([self.dataset.text[texts[q]] for q in my_texts]))
        text_ids, text_mask, text_feats = (_cat([p[j] for p in parts]) for j in range(3))
        if self.rank == 0:
            logger.info("%s: features of %d images and %d captions in %.0f s", self.where, len(valid),
                        len(texts), time.time() - started)
            if left_out:
                logger.warning("%s: %d unreadable images left out of the gallery with their captions",
                               self.where, len(left_out))
        lo = image_pos[mine[0]] if mine else 0
        txt_rank, top = self.image_to_text(mine, lo, embeds, image_feats, text_ids, text_mask, text_feats,
                                           texts)
        img_rank = self.text_to_image(my_texts, lo, embeds, image_feats, text_ids, text_mask, text_feats,
                                      text_image, texts)
        merged = all_gather_objects((txt_rank, top, img_rank))
        if self.rank == 0:
            logger.info("%s: scored in %.0f s (k_test=%d)", self.where, time.time() - started,
                        self.settings.k_test)
        return GalleryRanks({i: r for m in merged for i, r in m[0].items()},
                            {i: t for m in merged for i, t in m[1].items()},
                            {t: r for m in merged for t, r in m[2].items()}, left_out)

    def _k(self, size: int, what: str) -> int:
        k = min(self.settings.k_test, size)
        if k < self.settings.k_test and self.rank == 0:
            logger.info("%s: k_test=%d but the gallery has %d %s: all are re-ranked", self.where,
                        self.settings.k_test, size, what)
        return k

    def _embeds(self, embeds: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return embeds[rows.to(embeds.device)].to(self.device)

    def image_to_text(self, mine: list[int], lo: int, embeds: Any, image_feats: torch.Tensor,
                      text_ids: torch.Tensor, text_mask: torch.Tensor, text_feats: torch.Tensor,
                      texts: list[int]) -> tuple[dict, dict]:
        """Ranks and top captions of this rank's images (their rows re-ranked here)."""
        if not mine:
            return {}, {}
        k = self._k(len(texts), "captions")
        text_pos = {t: q for q, t in enumerate(texts)}
        sims = similarity(image_feats[lo:lo + len(mine)].to(self.device), text_feats.to(self.device))
        ranks, tops = {}, {}
        for j, (index, row_sims) in enumerate(zip(mine, sims)):
            top_sim, top_idx = row_sims.topk(k)
            cpu_idx = top_idx.cpu()
            pair_embeds = self._embeds(embeds, torch.full((k,), j, dtype=torch.long))
            logits = self.model.itm_match_logit(pair_embeds, text_ids[cpu_idx].to(self.device),
                                                text_mask[cpu_idx].to(self.device))
            row = torch.full((len(texts),), FILL, dtype=torch.float32)
            row[cpu_idx] = logits.float().cpu() + top_sim.float().cpu()
            ranks[index] = best_rank(row, [text_pos[t] for t in self.dataset.img2txt[index]])
            tops[index] = [texts[q] for q in best_first(row)[:TOP_SHOWN].tolist()]
        return ranks, tops

    def text_to_image(self, my_texts: range, lo: int, embeds: Any, image_feats: torch.Tensor,
                      text_ids: torch.Tensor, text_mask: torch.Tensor, text_feats: torch.Tensor,
                      text_image: torch.Tensor, texts: list[int]) -> dict[int, int]:
        """Ranks of this rank's captions; their top-k pairs are scored by the images' owners."""
        n = image_feats.shape[0]
        k = self._k(n, "images")
        if len(my_texts):
            sims = similarity(image_feats.to(self.device),
                              text_feats[my_texts.start:my_texts.stop].to(self.device)).t()
            top_sim, top_idx = (t.cpu() for t in sims.topk(k, dim=1))        # (m, k)
            queries = torch.arange(my_texts.start, my_texts.stop).repeat_interleave(k)
            requests = torch.stack([queries, top_idx.reshape(-1)], dim=1)     # (m * k, [text, image])
        else:
            top_sim = top_idx = None
            requests = torch.zeros((0, 2), dtype=torch.long)
        answers = all_gather_objects(self.answer(all_gather_objects(requests), lo, embeds,
                                                 text_ids, text_mask, k))
        values = torch.full((requests.shape[0],), float("nan"))
        for from_owner in answers:                   # each rank's answers, one entry per requester
            idx, logits = from_owner[self.rank]
            values[idx] = logits
        if torch.isnan(values).any():
            raise LavisIbError(f"{self.where}: {int(torch.isnan(values).sum())} text->image pairs were "
                               f"not scored by their image's rank (ranks disagree on the split).")
        ranks = {}
        for j, q in enumerate(my_texts):
            row = torch.full((n,), FILL, dtype=torch.float32)
            row[top_idx[j]] = values[j * k:(j + 1) * k] + top_sim[j]
            ranks[texts[q]] = int(positions(row, [int(text_image[q])])[0])
        return ranks

    def answer(self, requests: list[torch.Tensor], lo: int, embeds: Any, text_ids: torch.Tensor,
               text_mask: torch.Tensor, chunk: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """For each requesting rank, (positions in its request list, ITM logits) of the pairs
        whose image this rank holds, scored `chunk` pairs at a time."""
        held = 0 if embeds is None else embeds.shape[0]
        out = []
        for pairs in requests:
            idx = torch.nonzero((pairs[:, 1] >= lo) & (pairs[:, 1] < lo + held)).reshape(-1)
            logits = [self._score(pairs[idx[s:s + chunk]], lo, embeds, text_ids, text_mask)
                      for s in range(0, idx.numel(), chunk)]
            out.append((idx, torch.cat(logits) if logits else torch.zeros(0)))
        return out

    def _score(self, pairs: torch.Tensor, lo: int, embeds: torch.Tensor, text_ids: torch.Tensor,
               text_mask: torch.Tensor) -> torch.Tensor:
        logits = self.model.itm_match_logit(self._embeds(embeds, pairs[:, 1] - lo),
                                            text_ids[pairs[:, 0]].to(self.device),
                                            text_mask[pairs[:, 0]].to(self.device))
        return logits.float().cpu()


def score_gallery(model: Any, dataset: Any, settings: RetrievalSettings, device: torch.device,
                  where: str) -> GalleryRanks:
    """The 0-based ranks of a retrieval split (collective: every rank calls it)."""
    with torch.no_grad():
        return GalleryScorer(model, dataset, settings, device, where).run()

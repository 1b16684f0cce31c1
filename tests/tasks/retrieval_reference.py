"""References for the retrieval tests: a deterministic fake stage-1 model and LAVIS's
retrieval evaluation written out from its description (not from our code).

LAVIS (lavis/models/blip2_models/blip2.py `compute_sim_matrix`, lavis/tasks/retrieval.py
`_report_metrics`): similarity of image i and caption t = the largest dot product of one
of i's query features with t's feature; each image's row keeps its `k` most similar
captions, scored ITM match logit + similarity, every other caption -100; each caption's
row the same over images. A row is ordered with numpy's argsort reversed; an image's rank
is the best position of any of its captions, a caption's the position of its image;
recall@K = percent of ranks below K; the means of the three recalls, and their mean.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch
import torch.nn.functional as F

from lavis_ib.testing.fixtures import WORDS

# -- LAVIS's metric, transcribed ---------------------------------------------------------


def lavis_report(scores_i2t, scores_t2i, txt2img, img2txt, kind="stable"):
    """LAVIS's recall@K. `kind`: numpy's sort; LAVIS calls the default, whose order of
    equal scores depends on the machine's sort kernel, so ties are checked with "stable"
    (what a plain insertion sort, numpy's old default on short rows, gives)."""
    scores_i2t, scores_t2i = np.asarray(scores_i2t), np.asarray(scores_t2i)
    txt_ranks = np.zeros(scores_i2t.shape[0])
    for index, score in enumerate(scores_i2t):
        order = np.argsort(score, kind=kind)[::-1]
        txt_ranks[index] = min(np.where(order == t)[0][0] for t in img2txt[index])
    img_ranks = np.zeros(scores_t2i.shape[0])
    for index, score in enumerate(scores_t2i):
        order = np.argsort(score, kind=kind)[::-1]
        img_ranks[index] = np.where(order == txt2img[index])[0][0]

    def recall(ranks, k):
        return 100.0 * np.count_nonzero(ranks < k) / len(ranks)

    tr = [recall(txt_ranks, k) for k in (1, 5, 10)]
    ir = [recall(img_ranks, k) for k in (1, 5, 10)]
    out = {"txt_r1": tr[0], "txt_r5": tr[1], "txt_r10": tr[2], "txt_r_mean": sum(tr) / 3,
           "img_r1": ir[0], "img_r5": ir[1], "img_r10": ir[2], "img_r_mean": sum(ir) / 3}
    out["r_mean"] = (out["txt_r_mean"] + out["img_r_mean"]) / 2
    return out, txt_ranks.astype(int).tolist(), img_ranks.astype(int).tolist()


def lavis_score_matrices(model, images, texts, k, max_length=35):
    """LAVIS's two score matrices for `images` (a (N, 3, H, W) tensor) and `texts`, every
    feature computed in one call, the similarity in float64, one ITM call per query."""
    embeds, feats = model.retrieval_image_features(images)
    ids, mask, tfeats = model.retrieval_text_features(list(texts), max_length=max_length)
    sims = torch.einsum("iqd,td->iqt", feats.double(), tfeats.double()).amax(dim=1)   # (N, M)
    n, m = sims.shape
    i2t = torch.full((n, m), -100.0, dtype=torch.float64)
    for i in range(n):
        top_sim, top = sims[i].topk(min(k, m))
        logits = model.itm_match_logit(embeds[i].repeat(len(top), 1, 1), ids[top], mask[top])
        i2t[i, top] = logits.double() + top_sim
    t2i = torch.full((m, n), -100.0, dtype=torch.float64)
    for t in range(m):
        top_sim, top = sims[:, t].topk(min(k, n))
        logits = model.itm_match_logit(embeds[top], ids[t].repeat(len(top), 1), mask[t].repeat(len(top), 1))
        t2i[t, top] = logits.double() + top_sim
    return i2t.numpy(), t2i.numpy()


# -- a fake stage-1 model -----------------------------------------------------------------
KNOWN_WORDS = {w: 2 + i for i, w in enumerate(sorted(set(WORDS) | {"a", "the"}))}



class FakeRetrievalModel:
    """Implements the retrieval methods of the stage-1 model deterministically.

    Images: 2x2 average-pooled pixels, projected to P=4 "ViT" features of size D=6; Q=3
    normalised query features of size d=5 from their mean. Captions: word ids ([CLS]=1
    first, 0 pads; the fixture words get ids of their own, other words crc32 buckets), cut
    at max_length; the feature is the normalised sum of fixed word vectors. ITM logit: 4 x tanh of a bilinear form of the pair, so the
    re-ranking reorders the top k. Counts scored pairs (`itm_pairs`) and cut captions.
    """

    P, D, Q, d, VOCAB = 4, 6, 3, 5, 97

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.patch = torch.randn(3, self.D, generator=g)
        self.query = torch.randn(self.Q, self.D, self.d, generator=g)
        self.words = torch.randn(self.VOCAB, self.d, generator=g)
        self.bilinear = torch.randn(self.D, self.d, generator=g)
        self.device = torch.device("cpu")
        self.itm_pairs = 0
        self.itm_calls = []
        self.truncated = 0
        self.max_lengths = []

    def inference_counts(self):
        return {"num_texts_truncated": self.truncated}

    def retrieval_image_features(self, images):
        pooled = F.adaptive_avg_pool2d(images.float(), 2).flatten(2).transpose(1, 2)   # (N, 4, 3)
        embeds = pooled @ self.patch                                                    # (N, P, D)
        feats = torch.einsum("nd,qde->nqe", embeds.mean(dim=1), self.query)
        return embeds, F.normalize(feats, dim=-1)

    def tokens(self, text):
        known = len(KNOWN_WORDS)
        return [1] + [KNOWN_WORDS[w] if w in KNOWN_WORDS else
                      2 + known + zlib.crc32(w.encode()) % (self.VOCAB - 2 - known) for w in text.split()]

    def retrieval_text_features(self, texts, max_length=35):
        self.max_lengths.append(max_length)
        ids = torch.zeros((len(texts), max_length), dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = self.tokens(text)
            self.truncated += len(tokens) > max_length
            ids[row, : min(len(tokens), max_length)] = torch.tensor(tokens[:max_length])
        mask = (ids > 0).long()
        feats = (self.words[ids] * mask.unsqueeze(-1)).sum(dim=1)
        return ids, mask, F.normalize(feats, dim=-1)

    def itm_match_logit(self, image_embeds, input_ids, attention_mask):
        assert image_embeds.shape[0] == input_ids.shape[0] == attention_mask.shape[0]
        self.itm_pairs += image_embeds.shape[0]
        self.itm_calls.append(image_embeds.shape[0])
        text = (self.words[input_ids] * attention_mask.unsqueeze(-1)).sum(dim=1)
        return 4.0 * torch.tanh(torch.einsum("kd,de,ke->k", image_embeds.float().mean(dim=1),
                                             self.bilinear, text) / 4.0)

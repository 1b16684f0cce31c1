"""BLIP-2 stage 1: the Q-Former learns to read a frozen ViT before any LLM is attached.

The model LAVIS calls `blip2` (also registered as `blip2_feature_extractor` and
`blip2_image_text_matching`), trained with ITC, ITM and ITG; `Blip2Qformer` states the
losses and how they see other ranks."""
from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lavis_ib.common.errors import ConfigError, LavisIbError
from lavis_ib.common.precision import DTYPES
from lavis_ib.common.registry import registry
from lavis_ib.models.base_model import BaseModel
from lavis_ib.models.blip2_qformer.build import build_from_config
from lavis_ib.models.blip2_qformer.gather import exchange, gather_rows, world
from lavis_ib.models.blip2_qformer.hf_format import save_pretrained as save_hf_directory
from lavis_ib.models.blip2_qformer.heads import LMHead
from lavis_ib.models.blip2_qformer.losses import (draw_negatives, itc_loss, itg_loss_sum,
                                                  negative_weights, sample_generators,
                                                  similarities, upcast)
from lavis_ib.models.components.qformer import QFormer, QFormerSpec, bert_style_init_
from lavis_ib.models.components.vision import VisionSpec, build_vision_encoder, encode_images
from lavis_ib.models.weights.hf import merge_preprocess

logger = logging.getLogger(__name__)

TRAINABLE_PARTS = ("query_tokens", "qformer", "ln_vision", "vision_proj", "text_proj",
                   "itm_head", "temp", "lm_head")
ITC_GATHERS = ("autograd", "lavis")
TEMP_INIT = 0.07
RETRIEVAL_TEXT_LEN = 35   # LAVIS's compute_sim_matrix cuts texts at 35 tokens


@dataclass
class Blip2Features:
    """What `extract_features` returns (LAVIS's `BlipOutputFeatures` fields); a mode fills
    only its own fields, the rest are None."""

    image_embeds: torch.Tensor | None = None        # (B, Q, D) query outputs
    image_embeds_proj: torch.Tensor | None = None   # (B, Q, d) normalised projections
    text_embeds: torch.Tensor | None = None         # (B, L, D) text outputs
    text_embeds_proj: torch.Tensor | None = None    # (B, L, d) normalised; [:, 0] is [CLS]
    multimodal_embeds: torch.Tensor | None = None   # (B, Q, D) queries that read the text


def image_keys(values: Any, device: torch.device) -> torch.Tensor:
    """(B,) int64 keys of `image_id` values: integers as they are, anything else hashed
    from its text (stable across processes)."""
    if isinstance(values, torch.Tensor):
        return values.reshape(-1).to(device=device, dtype=torch.long)
    keys = []
    for value in values:
        if isinstance(value, int) or str(getattr(value, "dtype", "")).startswith("int"):
            keys.append(int(value))
        else:
            digest = hashlib.blake2b(str(value).encode(), digest_size=8).digest()
            keys.append(int.from_bytes(digest, "little") >> 1)
    return torch.tensor(keys, dtype=torch.long, device=device)


@registry.register_model("blip2")
@registry.register_model("blip2_feature_extractor")
class Blip2Qformer(BaseModel):
    """BLIP-2's first stage: the Q-Former learns to read a frozen ViT.

    Training returns LAVIS's three losses, summed unweighted: ITC (best query vs the text's
    [CLS], learnable temperature), ITM (hard negatives drawn from the world batch) and ITG
    (the caption decoded causally from the queries); docs/pretraining.md gives the rules
    and their sources.

    Args:
        vision / qformer: sizes (`qformer.encoder_hidden_size` must equal the ViT width).
        tokenizer: the Q-Former's BERT tokenizer with `[DEC]` as its bos token.
        num_query_token: learned queries (32).
        embed_dim: width of the ITC projections (256).
        ln_vision_eps: eps of `ln_vision` (LAVIS: 1e-5).
        max_txt_len: caption tokens kept in training ([CLS] and [SEP] included; 32).
        freeze_vit: keep the ViT frozen (pretraining) or train it (the `coco` type).
        vit_precision: "fp32" | "bf16" | "fp16" of the ViT.
        itc_gather: how ITC sees other ranks: "autograd" (default, N processes == 1
            process) or "lavis" (no gradient, as LAVIS).
    """

    PRETRAINED_MODEL_CONFIG_DICT = {
        "pretrain": "configs/models/blip2/pretrain.yaml",
        "coco": "configs/models/blip2/coco.yaml",
        "tiny": "configs/models/blip2/tiny.yaml",
    }
    DEFAULT_MODEL_TYPE = "pretrain"

    def __init__(self, vision: VisionSpec, qformer: QFormerSpec, tokenizer,
                 num_query_token: int = 32, embed_dim: int = 256, ln_vision_eps: float = 1e-5,
                 max_txt_len: int = 32, freeze_vit: bool = True, vit_precision: str = "fp32",
                 itc_gather: str = "autograd") -> None:
        super().__init__()
        if qformer.encoder_hidden_size != vision.hidden_size:
            raise LavisIbError(f"qformer.encoder_hidden_size {qformer.encoder_hidden_size} must "
                               f"equal vision.hidden_size {vision.hidden_size}.")
        if itc_gather not in ITC_GATHERS:
            raise ConfigError(f"model.itc_gather: '{itc_gather}' is not one of "
                              f"{', '.join(ITC_GATHERS)}.")
        if tokenizer.bos_token_id is None or tokenizer.pad_token_id is None:
            raise LavisIbError("the Q-Former tokenizer needs a bos token ([DEC]) and a pad token.")
        if len(tokenizer) > qformer.vocab_size:
            raise LavisIbError(f"the Q-Former tokenizer has {len(tokenizer)} tokens but the "
                               f"Q-Former embeds {qformer.vocab_size}; use the checkpoint's "
                               f"tokenizer.")
        self.vision_spec, self.qformer_spec = vision, qformer
        self.visual_encoder = build_vision_encoder(vision)
        self.ln_vision = nn.LayerNorm(vision.hidden_size, eps=ln_vision_eps)
        self.query_tokens = nn.Parameter(torch.zeros(1, num_query_token, qformer.hidden_size))
        self.qformer = QFormer(qformer, text_input=True)
        self.vision_proj = nn.Linear(qformer.hidden_size, embed_dim)
        self.text_proj = nn.Linear(qformer.hidden_size, embed_dim)
        self.itm_head = nn.Linear(qformer.hidden_size, 2)
        # one element, not 0-dim as in LAVIS: FSDP2 cannot shard a 0-dim parameter
        self.temp = nn.Parameter(torch.full((1,), TEMP_INIT))
        self.lm_head = LMHead(qformer.hidden_size, qformer.vocab_size, qformer.hidden_act,
                              qformer.layer_norm_eps)
        self.tokenizer = tokenizer
        self.embed_dim = int(embed_dim)
        self.max_txt_len = int(max_txt_len)
        self.freeze_vit = bool(freeze_vit)
        self.itc_gather = itc_gather
        self.preprocess_overrides: dict[str, Any] | None = None
        self.load_report: dict[str, Any] = {}
        self.truncated = 0          # texts cut at their token limit, over the model's life
        self.itm_without_negative = 0   # samples whose world batch held no negative
        self._warned_no_image_id = False
        self._frozen_modules: list[nn.Module] = []
        self.init_weights()
        self.visual_encoder.to(DTYPES[vit_precision])
        self.configure_trainable()

    # -- initialisation and what trains ----------------------------------------------
    def init_weights(self) -> None:
        """BERT-style random init of everything but the ViT (N(0, 0.02) weights, zero
        biases, unit norms), `temp` = 0.07, then the query feed-forward copied from the
        text feed-forward, as LAVIS does after loading BERT."""
        nn.init.normal_(self.query_tokens, std=0.02)
        bert_style_init_(self.qformer, self.vision_proj, self.text_proj, self.itm_head, self.lm_head)
        nn.init.zeros_(self.lm_head.bias)
        with torch.no_grad():
            self.temp.fill_(TEMP_INIT)
        self.copy_query_ffn()

    @torch.no_grad()
    def copy_query_ffn(self) -> None:
        """Every layer's query feed-forward := its text feed-forward (LAVIS's init)."""
        for layer in self.qformer.layers:
            layer.ffn_query.load_state_dict(layer.ffn_text.state_dict())

    def configure_trainable(self) -> dict[str, int]:
        """Everything but the ViT trains (the ViT too when `freeze_vit` is False);
        returns the trainable parameter counts per part (also logged)."""
        trainable = set(TRAINABLE_PARTS) | (set() if self.freeze_vit else {"visual_encoder"})
        counts: dict[str, int] = {}
        for name, param in self.named_parameters():
            part = name.split(".", 1)[0]
            param.requires_grad_(part in trainable)
            if part in trainable:
                counts[part] = counts.get(part, 0) + param.numel()
        logger.info("trainable parameters: %s", counts)
        self._frozen_modules = [self.visual_encoder] if self.freeze_vit else []
        self.train(self.training)
        return counts

    def train(self, mode: bool = True) -> "Blip2Qformer":
        """A frozen ViT stays in eval mode whatever `mode` is."""
        super().train(mode)
        for module in self._frozen_modules:
            module.eval()
        return self

    def trainable_module_names(self) -> list[str]:
        return list(TRAINABLE_PARTS) + ([] if self.freeze_vit else ["visual_encoder"])

    def shard_units(self) -> list[nn.Module]:
        return [*self.visual_encoder.blocks, *self.qformer.layers]

    def set_gradient_checkpointing(self, vit: bool = False, qformer: bool = False) -> None:
        self.visual_encoder.set_grad_checkpointing(bool(vit))
        self.qformer.gradient_checkpointing = bool(qformer)

    def inference_counts(self) -> dict[str, int]:
        """`num_truncated`: texts cut at their token limit (35 in retrieval)."""
        return {"num_truncated": self.truncated}

    def preprocess_config(self, default: Any) -> Any:
        """`default` with the checkpoint's eval image settings (HF directories)."""
        return merge_preprocess(default, self.preprocess_overrides)

    @classmethod
    def from_config(cls, cfg: Any) -> "Blip2Qformer":
        """Build from a model config node (see `blip2_qformer.build` for keys and routes)."""
        return build_from_config(cls, cfg)

    def save_pretrained(self, directory: str) -> str:
        """Write transformers' `Blip2ForImageTextRetrieval` layout; `temp` and the ITG
        head, which that layout lacks, go to a side file (see `blip2_qformer.hf_format`)."""
        return save_hf_directory(self, directory)

    # -- encoders (one place) ------------------------------------------------------------
    def image_embeds(self, image: torch.Tensor) -> torch.Tensor:
        """`ln_vision(ViT(image))` (B, 1 + P, D_vit); no gradient into a frozen ViT."""
        if image.dim() != 4:
            raise LavisIbError(f"image must be (B, C, H, W); got shape {tuple(image.shape)}.")
        image = image.to(self.device)
        with torch.no_grad() if self.freeze_vit else contextlib.nullcontext():
            vit_out = encode_images(self.visual_encoder, image)
        return self.ln_vision(vit_out.to(self.ln_vision.weight.dtype))

    def _queries(self, batch: int) -> torch.Tensor:
        return self.query_tokens.expand(batch, -1, -1)

    def tokenize(self, texts: Sequence[str], max_length: int | None,
                 pad_to_max: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, mask) on the model's device: [CLS] text [SEP], cut at `max_length`
        (None: the position table's length) on the right; cuts are counted and logged."""
        texts = [str(t) for t in texts]
        limit = min(max_length or self.qformer_spec.max_position_embeddings,
                    self.qformer_spec.max_position_embeddings)
        full = self.tokenizer(texts).input_ids
        cut = sum(len(ids) > limit for ids in full)
        if cut:
            self.truncated += cut
            logger.warning("blip2: %d texts cut at %d tokens (%d so far)", cut, limit,
                           self.truncated)
        tok = self.tokenizer(texts, padding="max_length" if pad_to_max else "longest",
                             truncation=True, max_length=limit, return_tensors="pt")
        return tok.input_ids.to(self.device), tok.attention_mask.to(self.device)

    def _text_cls(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.qformer.encode_text(ids, mask)[:, 0]

    # -- training ------------------------------------------------------------------------
    @staticmethod
    def captions(samples: dict[str, Any]) -> list[str]:
        """The text of each sample: `text_output` when the batch has it (lavis_ib's caption
        datasets put the caption there), else `text_input` (LAVIS's caption datasets)."""
        for key in ("text_output", "text_input"):
            if samples.get(key) is not None:
                return list(samples[key])
        raise LavisIbError(f"forward(samples): no caption (text_output or text_input) in "
                           f"{sorted(samples)}.")

    def _positives(self, samples: dict[str, Any], b: int, sizes: Sequence[int],
                   offset: int) -> torch.Tensor:
        """(b, N) bool: world samples showing the image of each local sample (the sample
        itself, and with `image_id` every caption of the same image)."""
        n = sum(sizes)
        if samples.get("image_id") is None:
            if not self._warned_no_image_id:
                logger.warning("blip2: the batches carry no image_id, so ITC and ITM count "
                               "only a sample's own caption as its positive (captions of "
                               "the same image in one batch are negatives, as in LAVIS)")
                self._warned_no_image_id = True
            pos = torch.zeros(b, n, dtype=torch.bool, device=self.device)
            pos[torch.arange(b), offset + torch.arange(b)] = True
            return pos
        keys = image_keys(samples["image_id"], self.device)
        if keys.shape[0] != b:
            raise LavisIbError(f"{keys.shape[0]} image_id values for a batch of {b}.")
        keys_all = gather_rows(keys, sizes, with_grad=False)
        return keys[:, None] == keys_all[None, :]

    @staticmethod
    def _negative_base() -> int:
        """The seed base of this step's ITM draws: one draw from torch's CPU RNG (which the
        runner seeds and checkpoints), rank 0's value used by every rank, so that a resume
        repeats the draws and the split over processes does not change them (with dropout
        off; dropout masks depend on the split anyway)."""
        return int(torch.randint(0, 2 ** 62, (1,)))

    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        """LAVIS's stage-1 losses of a batch with `image` and a caption.

        Returns {"loss", "loss_itc", "loss_itm", "loss_lm", "loss_sum", "num_tokens"}:
        `loss` = itc + itm + lm; `num_tokens` is the number of samples and `loss_sum` =
        loss x samples, so the runner's sum over ranks and micro-batches divided by the
        samples of the step is the mean over samples. ITC and ITM are means over samples;
        ITG is LAVIS's mean over target tokens, taken over the world batch: each rank's
        `loss_lm` is its token sum x (world samples / world tokens) / local samples.
        """
        if samples.get("image") is None:
            raise LavisIbError(f"forward(samples): missing key 'image' (have {sorted(samples)}).")
        texts = self.captions(samples)
        image = samples["image"]
        b = image.shape[0]
        if len(texts) != b:
            raise LavisIbError(f"{len(texts)} captions for a batch of {b} images.")
        image_embeds = self.image_embeds(image)
        states: list[torch.Tensor] = []
        query_out = self.qformer(self._queries(b), image_embeds, query_states=states)
        image_feats = F.normalize(self.vision_proj(query_out), dim=-1)
        ids, mask = self.tokenize(texts, self.max_txt_len, pad_to_max=True)
        text_feat = F.normalize(self.text_proj(self._text_cls(ids, mask)), dim=-1)

        rank, _ = world()
        tokens = int(mask[:, 1:].sum())   # ITG targets: every text token after [DEC]
        table = exchange([b, tokens, self._negative_base()], self.device)
        sizes = [row[0] for row in table]
        offset, n_world, t_world = sum(sizes[:rank]), sum(sizes), sum(row[1] for row in table)
        positives = self._positives(samples, b, sizes, offset)

        # ITC over the world batch
        with_grad = self.itc_gather == "autograd"
        sim_i2t, sim_t2i = similarities(
            image_feats, gather_rows(text_feat, sizes, with_grad),
            text_feat, gather_rows(image_feats, sizes, with_grad), self.temp)
        loss_itc = itc_loss(sim_i2t, sim_t2i, positives).mean()

        # ITM with hard negatives from the world batch
        own = [offset + i for i in range(b)]
        w_t2i, has_negative = negative_weights(sim_t2i, positives)
        w_i2t, _ = negative_weights(sim_i2t, positives)
        neg_image, neg_text = draw_negatives(w_t2i, w_i2t, has_negative,
                                             sample_generators(table[0][2], own), own)
        missing = int((~has_negative).sum())
        if missing:
            self.itm_without_negative += missing
            logger.warning("blip2: %d samples had no negative in the world batch (every "
                           "sample shows their image); their ITM pairs get no weight (%d so far)",
                           missing, self.itm_without_negative)
        embeds_world = gather_rows(image_embeds, sizes, with_grad=True)
        ids_world = gather_rows(ids, sizes, with_grad=False)
        mask_world = gather_rows(mask, sizes, with_grad=False)
        neg_image, neg_text = neg_image.to(self.device), neg_text.to(self.device)
        itm_ids = torch.cat([ids, ids, ids_world[neg_text]])
        itm_mask = torch.cat([mask, mask, mask_world[neg_text]])
        itm_images = torch.cat([image_embeds, embeds_world[neg_image], image_embeds])
        logits = self.itm_logits(itm_images, itm_ids, itm_mask)
        labels = torch.cat([torch.ones(b, dtype=torch.long), torch.zeros(2 * b, dtype=torch.long)])
        keep = has_negative.to(self.device)
        weight = torch.cat([torch.ones_like(keep), keep, keep])
        rows = F.cross_entropy(upcast(logits), labels.to(self.device), reduction="none")
        loss_itm = (rows * weight).sum() / (3 * b)

        # ITG: [DEC] text, causal, every query visible
        dec_ids = ids.clone()
        dec_ids[:, 0] = self.tokenizer.bos_token_id
        targets = dec_ids.masked_fill(mask == 0, -100)
        hidden = self.qformer.decode_text(dec_ids, mask, states)
        lm_sum, _ = itg_loss_sum(self.lm_head(hidden, self.qformer.word_embeddings.weight),
                                 targets)
        loss_lm = lm_sum * n_world / (max(t_world, 1) * b)

        loss = loss_itc + loss_itm + loss_lm
        return {"loss": loss, "loss_itc": loss_itc, "loss_itm": loss_itm, "loss_lm": loss_lm,
                "loss_sum": loss * b,
                "num_tokens": torch.tensor(b, dtype=torch.long, device=loss.device)}

    # -- matching and features -------------------------------------------------------------
    def itm_logits(self, image_embeds: torch.Tensor, ids: torch.Tensor,
                   mask: torch.Tensor) -> torch.Tensor:
        """(B, 2) ITM logits: the head over every query that read image and text, averaged
        over the queries."""
        image_embeds = image_embeds.to(self.device)
        out = self.qformer(self._queries(ids.shape[0]), image_embeds, ids, mask)
        return self.itm_head(out).mean(dim=1)

    @torch.no_grad()
    def extract_features(self, samples: dict[str, Any], mode: str = "multimodal") -> Blip2Features:
        """LAVIS's feature extractor: "image" (query outputs and their normalised
        projections), "text" (text outputs and their normalised projections; [:, 0] is
        the [CLS] feature ITC uses) or "multimodal" (the queries after reading the text)."""
        if mode not in ("image", "text", "multimodal"):
            raise LavisIbError(f"extract_features: mode '{mode}' is not one of image, text, "
                               f"multimodal.")
        if mode in ("image", "multimodal") and samples.get("image") is None:
            raise LavisIbError(f"extract_features(mode='{mode}') needs samples['image'].")
        if mode in ("text", "multimodal") and samples.get("text_input") is None:
            raise LavisIbError(f"extract_features(mode='{mode}') needs samples['text_input'].")
        if mode == "image":
            embeds = self.image_embeds(samples["image"])
            out = self.qformer(self._queries(embeds.shape[0]), embeds)
            return Blip2Features(image_embeds=out,
                                 image_embeds_proj=F.normalize(self.vision_proj(out), dim=-1))
        ids, mask = self.tokenize(samples["text_input"], None)
        if mode == "text":
            out = self.qformer.encode_text(ids, mask)
            return Blip2Features(text_embeds=out,
                                 text_embeds_proj=F.normalize(self.text_proj(out), dim=-1))
        embeds = self.image_embeds(samples["image"])
        out = self.qformer(self._queries(embeds.shape[0]), embeds, ids, mask)
        return Blip2Features(multimodal_embeds=out)

    # -- retrieval (the interface the retrieval task calls) ---------------------------------
    @torch.no_grad()
    def retrieval_image_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image_embeds (N, 1 + P, D_vit): `ln_vision(ViT)` kept for ITM re-ranking,
        image_feats (N, Q, d): normalised query projections for ITC)."""
        embeds = self.image_embeds(images)
        out = self.qformer(self._queries(embeds.shape[0]), embeds)
        return embeds, F.normalize(self.vision_proj(out), dim=-1)

    @torch.no_grad()
    def retrieval_text_features(self, texts: Sequence[str], max_length: int = RETRIEVAL_TEXT_LEN
                                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids (M, max_length), attention_mask, text_feats (M, d) normalised [CLS]
        projections), texts padded and cut at `max_length` tokens as LAVIS evaluates."""
        ids, mask = self.tokenize(texts, max_length, pad_to_max=True)
        return ids, mask, F.normalize(self.text_proj(self._text_cls(ids, mask)), dim=-1)

    @torch.no_grad()
    def itm_match_logit(self, image_embeds: torch.Tensor, input_ids: torch.Tensor,
                        attention_mask: torch.Tensor) -> torch.Tensor:
        """(k,) the "match" logit of each (image, text) pair, averaged over the queries
        (LAVIS's `compute_itm`: it takes column 1 of every query's logits, then the mean,
        which equals column 1 of the mean)."""
        return self.itm_logits(image_embeds, input_ids.to(self.device),
                               attention_mask.to(self.device))[:, 1]

    def itc_similarity(self, image: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """(B, 1) each pair's ITC similarity: the best query's cosine with the text's
        [CLS] feature (no temperature)."""
        ids, mask = self.tokenize(texts, self.max_txt_len)
        _, image_feats = self.retrieval_image_features(image)
        text_feat = F.normalize(self.text_proj(self._text_cls(ids, mask)), dim=-1)
        return torch.bmm(image_feats, text_feat.unsqueeze(-1)).max(dim=1).values


@registry.register_model("blip2_image_text_matching")
class Blip2ImageTextMatching(Blip2Qformer):
    """LAVIS's `blip2_image_text_matching`: the stage-1 model scoring given pairs.
    `forward(samples, match_head="itm")` gives (B, 2) ITM logits, "itc" the (B, 1)
    similarity of each pair; texts cut at `max_txt_len` tokens."""

    @torch.no_grad()
    def forward(self, samples: dict[str, Any], match_head: str = "itm") -> torch.Tensor:
        for key in ("image", "text_input"):
            if samples.get(key) is None:
                raise LavisIbError(f"forward(samples): missing key '{key}' "
                                   f"(have {sorted(samples)}).")
        if match_head == "itm":
            ids, mask = self.tokenize(samples["text_input"], self.max_txt_len)
            return self.itm_logits(self.image_embeds(samples["image"]), ids, mask)
        if match_head == "itc":
            return self.itc_similarity(samples["image"], samples["text_input"])
        raise LavisIbError(f"match_head '{match_head}' is not one of itm, itc.")

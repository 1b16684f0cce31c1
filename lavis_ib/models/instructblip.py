"""InstructBLIP: frozen ViT -> instruction-aware Q-Former -> projection -> frozen LLM.

One class for both LLM families (the family-specific token layout lives in
`llm_adapters`); the image path (ViT, `ln_vision`, Q-Former, projection) exists once, in
`encode`, and serves training, generation and candidate ranking. Building from configs and
checkpoints is in `lavis_ib.models.build`; ranking and inference helpers in `inference`.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Sequence

import torch
from torch import nn

from lavis_ib.common.errors import LavisIbError
from lavis_ib.common.precision import DTYPES
from lavis_ib.common.registry import registry
from lavis_ib.models.base_model import BaseModel
from lavis_ib.models.inference import InferenceMixin
from lavis_ib.models.llm_adapters import make_adapter
from lavis_ib.models.qformer import QFormer, QFormerSpec
from lavis_ib.models.vision import VisionSpec, build_vision_encoder, encode_images

logger = logging.getLogger(__name__)

TRAINABLE_PARTS = ("query_tokens", "qformer", "ln_vision", "llm_proj")


@registry.register_model("instructblip")
class InstructBLIP(InferenceMixin, BaseModel):
    """InstructBLIP with a Vicuna/LLaMA (decoder-only) or FlanT5 (encoder-decoder) LLM.

    Build it with `InstructBLIP.from_config(cfg)` or
    `lavis_ib.load_model_and_preprocess("instructblip", model_type)`.

    Args:
        vision: ViT sizes.
        qformer: Q-Former sizes (`encoder_hidden_size` must equal the ViT width).
        llm: a transformers causal-LM or seq2seq-LM (frozen).
        llm_tokenizer: the LLM's tokenizer.
        qformer_tokenizer: the BERT tokenizer (with the `[DEC]` bos token) of the Q-Former.
        num_query_token: learned queries per image (32).
        ln_vision_eps: eps of `ln_vision` (the checkpoint's; LAVIS used 1e-5).
        qformer_text_input: feed the instruction to the Q-Former (False: the ablation).
        max_txt_len: instruction tokens kept (left-truncated) for LLM and Q-Former.
        max_output_txt_len: target tokens kept (right-truncated, EOS included).
        prompt: default prompt of `generate` when a batch has none.
        freeze_vit: keep the ViT frozen (InstructBLIP does).
        vit_precision / llm_precision: "fp32" | "bf16" | "fp16" of the frozen parts.
    """

    PRETRAINED_MODEL_CONFIG_DICT = {
        "vicuna7b": "configs/models/instructblip/vicuna7b.yaml",
        "vicuna13b": "configs/models/instructblip/vicuna13b.yaml",
        "flant5xl": "configs/models/instructblip/flant5xl.yaml",
        "flant5xxl": "configs/models/instructblip/flant5xxl.yaml",
        "tiny_vicuna": "configs/models/instructblip/tiny_vicuna.yaml",
        "tiny_flant5": "configs/models/instructblip/tiny_flant5.yaml",
    }
    DEFAULT_MODEL_TYPE = "vicuna7b"

    def __init__(self, vision: VisionSpec, qformer: QFormerSpec, llm: nn.Module, llm_tokenizer,
                 qformer_tokenizer, num_query_token: int = 32, ln_vision_eps: float = 1e-6,
                 qformer_text_input: bool = True, max_txt_len: int = 128,
                 max_output_txt_len: int = 256, prompt: str = "", freeze_vit: bool = True,
                 vit_precision: str = "fp32", llm_precision: str = "fp32") -> None:
        super().__init__()
        if qformer.encoder_hidden_size != vision.hidden_size:
            raise LavisIbError(f"qformer.encoder_hidden_size {qformer.encoder_hidden_size} must "
                               f"equal vision.hidden_size {vision.hidden_size}.")
        self.vision_spec, self.qformer_spec = vision, qformer
        self.visual_encoder = build_vision_encoder(vision)
        self.ln_vision = nn.LayerNorm(vision.hidden_size, eps=ln_vision_eps)
        self.query_tokens = nn.Parameter(torch.zeros(1, num_query_token, qformer.hidden_size))
        self.qformer = QFormer(qformer)
        self.llm = llm
        self.llm_proj = nn.Linear(qformer.hidden_size, llm.config.get_text_config().hidden_size
                                  if hasattr(llm.config, "get_text_config") else llm.config.hidden_size)
        self.llm_tokenizer = llm_tokenizer
        self.qformer_tokenizer = qformer_tokenizer
        self.qformer_text_input = bool(qformer_text_input)
        self.max_txt_len, self.max_output_txt_len = int(max_txt_len), int(max_output_txt_len)
        self.prompt = prompt
        self.freeze_vit = bool(freeze_vit)
        self.adapter = make_adapter(llm, llm_tokenizer, max_txt_len=max_txt_len,
                                    max_output_txt_len=max_output_txt_len)
        self.preprocess_overrides: dict[str, Any] | None = None
        self.load_report: dict[str, Any] = {}
        self._init_trainable_weights()
        self.visual_encoder.to(DTYPES[vit_precision])
        self.llm.to(DTYPES[llm_precision])
        self.configure_trainable()

    # -- what trains ---------------------------------------------------------------
    def _init_trainable_weights(self) -> None:
        """BERT-style init of the new parts (checkpoints overwrite it)."""
        nn.init.normal_(self.query_tokens, std=0.02)
        for module in [self.qformer, self.llm_proj]:
            for m in module.modules():
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(m.weight, std=0.02)
                    if isinstance(m, nn.Linear) and m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, nn.LayerNorm):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)

    def configure_trainable(self) -> dict[str, int]:
        """The one place that decides what trains: query tokens, Q-Former, `ln_vision`,
        projection (plus the ViT when `freeze_vit` is False). The LLM never trains.
        Returns trainable parameter counts per part (also logged)."""
        trainable = set(TRAINABLE_PARTS) | (set() if self.freeze_vit else {"visual_encoder"})
        counts: dict[str, int] = {}
        for name, param in self.named_parameters():
            part = name.split(".", 1)[0]
            param.requires_grad_(part in trainable)
            if part in trainable:
                counts[part] = counts.get(part, 0) + param.numel()
        logger.info("trainable parameters: %s", counts)
        self._frozen_modules = [self.llm] + ([self.visual_encoder] if self.freeze_vit else [])
        self.train(self.training)
        return counts

    def train(self, mode: bool = True) -> "InstructBLIP":
        """Frozen parts stay in eval mode (no dropout / drop-path) whatever `mode` is."""
        super().train(mode)
        for module in getattr(self, "_frozen_modules", []):
            module.eval()
        return self

    def trainable_module_names(self) -> list[str]:
        return list(TRAINABLE_PARTS) + ([] if self.freeze_vit else ["visual_encoder"])

    def _llm_blocks(self) -> list[nn.Module]:
        names = set(getattr(self.llm, "_no_split_modules", None) or [])
        return [m for m in self.llm.modules() if type(m).__name__ in names]

    def shard_units(self) -> list[nn.Module]:
        """ViT blocks, Q-Former layers and LLM blocks (each holds one dtype)."""
        return [*self.visual_encoder.blocks, *self.qformer.layers, *self._llm_blocks()]

    def checkpoint_units(self) -> list[nn.Module]:
        """LLM blocks, whose activations may be recomputed in the backward pass."""
        return self._llm_blocks()

    def frozen_units(self) -> list[nn.Module]:
        return [*self.visual_encoder.blocks, *self._llm_blocks()]

    def set_gradient_checkpointing(self, vit: bool = False, qformer: bool = False) -> None:
        self.visual_encoder.set_grad_checkpointing(bool(vit))
        self.qformer.gradient_checkpointing = bool(qformer)

    # -- the image path (one place) ------------------------------------------------
    def _qformer_tokens(self, texts: Sequence[str]):
        limit = min(self.max_txt_len, self.qformer_spec.max_position_embeddings)
        tok = self.qformer_tokenizer(list(texts), padding="longest", truncation=True,
                                     max_length=limit, return_tensors="pt")
        return tok.input_ids.to(self.device), tok.attention_mask.to(self.device)

    def encode(self, image: torch.Tensor, instructions: Sequence[str]) -> torch.Tensor:
        """LLM soft prompts (B, T*Q, D_llm) of images (B,C,H,W) or videos (B,C,T,H,W).

        Each video frame goes through ViT and Q-Former with the sample's instruction; the
        frames' query outputs are concatenated in time order (no temporal embedding).
        """
        if image.dim() not in (4, 5):
            raise LavisIbError(f"image must be (B, C, H, W) or (B, C, T, H, W); got shape "
                               f"{tuple(image.shape)}.")
        if len(instructions) != image.shape[0]:
            raise LavisIbError(f"{len(instructions)} instructions for a batch of {image.shape[0]}.")
        b = image.shape[0]
        frames = 1
        if image.dim() == 5:
            frames = image.shape[2]
            image = image.permute(0, 2, 1, 3, 4).reshape(b * frames, *image.shape[1:2], *image.shape[3:])
            instructions = [text for text in instructions for _ in range(frames)]
        image = image.to(self.device)
        with torch.no_grad() if self.freeze_vit else contextlib.nullcontext():
            vit_out = encode_images(self.visual_encoder, image)
        tokens = self.ln_vision(vit_out.to(self.ln_vision.weight.dtype))
        queries = self.query_tokens.expand(tokens.shape[0], -1, -1)
        if self.qformer_text_input:
            ids, mask = self._qformer_tokens(instructions)
            out = self.qformer(queries, tokens, ids, mask)
        else:
            out = self.qformer(queries, tokens)
        prefix = self.llm_proj(out)
        return prefix.reshape(b, frames * prefix.shape[1], prefix.shape[2])

    # -- training ------------------------------------------------------------------
    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Training loss of a batch with `image`, `text_input`, `text_output`.

        Returns:
            {"loss": summed target-token NLL / target tokens of this batch,
             "loss_sum": the summed NLL, "num_tokens": the target token count}.
        """
        for key in ("image", "text_input", "text_output"):
            if key not in samples:
                raise LavisIbError(f"forward(samples): missing key '{key}' (have {sorted(samples)}).")
        texts, targets = list(samples["text_input"]), list(samples["text_output"])
        prefix = self.encode(samples["image"], texts)
        loss_sum, num_tokens = self.adapter.loss(prefix, self.adapter.tokenize_prompts(texts),
                                                 self.adapter.tokenize_targets(targets))
        return {"loss": loss_sum / num_tokens.clamp(min=1), "loss_sum": loss_sum,
                "num_tokens": num_tokens}

    # -- building --------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Any) -> "InstructBLIP":
        """Build from a model config node (see `lavis_ib.models.build` for the keys)."""
        from lavis_ib.models.build import build_from_config

        return build_from_config(cls, cfg)

    def save_pretrained(self, directory: str) -> str:
        """Write the Hugging Face `InstructBlipForConditionalGeneration` +
        `InstructBlipProcessor` layout to `directory`."""
        from lavis_ib.models.checkpoints.hf import save_pretrained

        return save_pretrained(self, directory)

    def preprocess_config(self, default: Any) -> Any:
        """The `preprocess` node to use: `default` with the checkpoint's eval image
        settings (size, mean, std) when the model came from an HF directory."""
        from lavis_ib.models.checkpoints.hf import merge_preprocess

        return merge_preprocess(default, self.preprocess_overrides)

    def init_from(self, sources: Sequence[Any], allow_random_init: bool = False) -> dict:
        """Initialise the trainable parts from BLIP-2 / BERT checkpoints (see `init`)."""
        from lavis_ib.models.init import init_from

        return init_from(self, sources, allow_random_init=allow_random_init)

"""InstructBLIP: frozen ViT -> instruction-aware Q-Former -> projection -> frozen LLM.

One class for every LLM family (the family's token layout lives in `models.llm.families`);
the image path is `QFormerLLM`'s, shared with BLIP-2, and `encode` adds the instruction the
Q-Former reads. Building is in `build`, inference in `components.inference`."""
from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
from torch import nn

from lavis_ib.common.errors import LavisIbError
from lavis_ib.common.registry import registry
from lavis_ib.models.components.qformer import QFormerSpec
from lavis_ib.models.components.qformer_llm import FAMILY_OF_MODEL_TYPE, TRAINABLE_PARTS, QFormerLLM
from lavis_ib.models.components.vision import VisionSpec
from lavis_ib.models.instructblip.build import build_from_config
from lavis_ib.models.weights.hf import merge_preprocess
from lavis_ib.models.instructblip.hf_format import save_pretrained as save_hf_directory
from lavis_ib.models.instructblip.init import init_from as init_trainable_from

logger = logging.getLogger(__name__)
__all__ = ["InstructBLIP", "TRAINABLE_PARTS", "FAMILY_OF_MODEL_TYPE"]


@registry.register_model("instructblip")
class InstructBLIP(QFormerLLM):
    """InstructBLIP with a decoder-only (Vicuna/LLaMA, OPT) or encoder-decoder (FlanT5) LLM.

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
        "tiny_opt": "configs/models/instructblip/tiny_opt.yaml",
    }
    DEFAULT_MODEL_TYPE = "vicuna7b"

    def __init__(self, vision: VisionSpec, qformer: QFormerSpec, llm: nn.Module, llm_tokenizer,
                 qformer_tokenizer, num_query_token: int = 32, ln_vision_eps: float = 1e-6,
                 qformer_text_input: bool = True, max_txt_len: int = 128,
                 max_output_txt_len: int = 256, prompt: str = "", freeze_vit: bool = True,
                 vit_precision: str = "fp32", llm_precision: str = "fp32") -> None:
        super().__init__(vision, qformer, llm, llm_tokenizer, num_query_token=num_query_token,
                         ln_vision_eps=ln_vision_eps, qformer_text_side=True,
                         max_txt_len=max_txt_len, max_output_txt_len=max_output_txt_len,
                         prompt=prompt, freeze_vit=freeze_vit, vit_precision=vit_precision,
                         llm_precision=llm_precision)
        self.qformer_tokenizer = qformer_tokenizer
        self.qformer_text_input = bool(qformer_text_input)

    # -- the image path (one place) ------------------------------------------------
    def _qformer_tokens(self, texts: Sequence[str]):
        limit = min(self.max_txt_len, self.qformer_spec.max_position_embeddings)
        tok = self.qformer_tokenizer(list(texts), padding="longest", truncation=True,
                                     max_length=limit, return_tensors="pt")
        return tok.input_ids.to(self.device), tok.attention_mask.to(self.device)

    def encode(self, image: torch.Tensor, instructions: Sequence[str]) -> torch.Tensor:
        """LLM soft prompts (B, T*Q, D_llm) of images (B,C,H,W) or videos (B,C,T,H,W); the
        Q-Former reads each sample's instruction unless `qformer_text_input` is False."""
        if len(instructions) != image.shape[0]:
            raise LavisIbError(f"{len(instructions)} instructions for a batch of {image.shape[0]}.")
        tokens = self._qformer_tokens if self.qformer_text_input else None
        return self.query_outputs(image, list(instructions), tokens)

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
        return self.loss_output(*self.adapter.loss(prefix, self.adapter.tokenize_prompts(texts),
                                                   self.adapter.tokenize_targets(targets)))

    # -- building --------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Any) -> "InstructBLIP":
        """Build from a model config node (see `instructblip.build` for the keys)."""
        return build_from_config(cls, cfg)

    def save_pretrained(self, directory: str) -> str:
        """Write the Hugging Face `InstructBlipForConditionalGeneration` +
        `InstructBlipProcessor` layout to `directory`."""
        self.require_merged_adapters()
        return save_hf_directory(self, directory)

    def preprocess_config(self, default: Any) -> Any:
        """The `preprocess` node to use: `default` with the checkpoint's eval image
        settings (size, mean, std) when the model came from an HF directory."""
        return merge_preprocess(default, self.preprocess_overrides)

    def init_from(self, sources: Sequence[Any], allow_random_init: bool = False) -> dict:
        """Initialise the trainable parts from BLIP-2 / BERT checkpoints (see `init`)."""
        return init_trainable_from(self, sources, allow_random_init=allow_random_init)

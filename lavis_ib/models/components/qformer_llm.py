"""`QFormerLLM`: the image path every Q-Former model shares, as one base class.

InstructBLIP (whose Q-Former also reads the instruction) and BLIP-2 (queries only) both
derive from it, so the image path, the freezing decision, FSDP's shard units, the LLM
adapter and the parameter names exist once."""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from lavis_ib.common.dropout_keys import FIELD as DROPOUT_KEYS
from lavis_ib.common.errors import ConfigError, LavisIbError
from lavis_ib.common.precision import DTYPES
from lavis_ib.models.base_model import BaseModel
from lavis_ib.models.config import LLM_TRAIN_MODES
from lavis_ib.models.components.attention_maps import QFormerAttentionMixin
from lavis_ib.models.components.inference import InferenceMixin
from lavis_ib.models.llm.families import make_adapter
from lavis_ib.models.llm.lora import (adapter_dropouts, adapter_units,
                                                 is_adapter_parameter, merge_adapters)
from lavis_ib.models.components.qformer import QFormer, QFormerSpec, bert_style_init_
from lavis_ib.models.components.vision import VisionSpec, build_vision_encoder, encode_images

logger = logging.getLogger(__name__)

TRAINABLE_PARTS = ("query_tokens", "qformer", "ln_vision", "llm_proj")
#: `llm_family` of the LLMs whose family name is not their transformers `model_type`
FAMILY_OF_MODEL_TYPE = {"llama": "vicuna", "t5": "flant5"}


def _take_dropout_keys(model: "QFormerLLM", args: tuple, kwargs: dict) -> None:
    """Forward pre-hook: the batch's per-sample dropout keys, if any, for the Q-Former
    during this forward call (`_drop_dropout_keys` clears them; docs/determinism.md)."""
    samples = args[0] if args else kwargs.get("samples")
    keys = samples.get(DROPOUT_KEYS) if isinstance(samples, Mapping) else None
    model.qformer.sample_keys = keys if model.training else None


def _drop_dropout_keys(model: "QFormerLLM", args: tuple, output: Any) -> None:
    model.qformer.sample_keys = None


class QFormerLLM(QFormerAttentionMixin, InferenceMixin, BaseModel):
    """ViT + `ln_vision` + query tokens + Q-Former + projection + frozen LLM.

    frozen ViT -> trainable `ln_vision` -> learned queries read the image in the Q-Former ->
    trainable projection -> soft prompts of a frozen LLM. The parameter names are the
    top-level ones of the checkpoint formats (`visual_encoder`, `ln_vision`,
    `query_tokens`, `qformer`, `llm_proj`, `llm`), so subclasses share the name maps too.

    Args:
        vision / qformer: sizes (`qformer.encoder_hidden_size` must equal the ViT width).
        llm / llm_tokenizer: the frozen transformers LLM and its tokenizer.
        num_query_token: learned queries per image.
        ln_vision_eps: eps of `ln_vision` (the checkpoint's; LAVIS used 1e-5).
        qformer_text_side: build the Q-Former's text side (InstructBLIP) or not (BLIP-2).
        max_txt_len / max_output_txt_len: token limits handed to the LLM adapter.
        prompt: default prompt of `generate` when a batch has none.
        freeze_vit: keep the ViT frozen; False trains it (BLIP-2's caption models).
        vit_precision / llm_precision: "fp32" | "bf16" | "fp16" of the ViT and the LLM.
    """

    def __init__(self, vision: VisionSpec, qformer: QFormerSpec, llm: nn.Module, llm_tokenizer,
                 num_query_token: int = 32, ln_vision_eps: float = 1e-6,
                 qformer_text_side: bool = True, max_txt_len: int = 128,
                 max_output_txt_len: int = 256, prompt: str = "", freeze_vit: bool = True,
                 vit_precision: str = "fp32", llm_precision: str = "fp32") -> None:
        super().__init__()
        self._adapter_dropouts: list[nn.Module] = []
        if qformer.encoder_hidden_size != vision.hidden_size:
            raise LavisIbError(f"qformer.encoder_hidden_size {qformer.encoder_hidden_size} must "
                               f"equal vision.hidden_size {vision.hidden_size}.")
        self.vision_spec, self.qformer_spec = vision, qformer
        self.visual_encoder = build_vision_encoder(vision)
        self.ln_vision = nn.LayerNorm(vision.hidden_size, eps=ln_vision_eps)
        self.query_tokens = nn.Parameter(torch.zeros(1, num_query_token, qformer.hidden_size))
        self.qformer = QFormer(qformer, text_input=qformer_text_side)
        self.llm = llm
        self.llm_proj = nn.Linear(qformer.hidden_size, llm.config.get_text_config().hidden_size)
        self.llm_tokenizer = llm_tokenizer
        self.max_txt_len, self.max_output_txt_len = int(max_txt_len), int(max_output_txt_len)
        self.prompt = prompt
        self.freeze_vit = bool(freeze_vit)
        self.llm_train_mode = "lavis"   # set_llm_train_mode; the config's llm_train_mode
        self.adapter = make_adapter(llm, llm_tokenizer, max_txt_len=max_txt_len,
                                    max_output_txt_len=max_output_txt_len)
        self.preprocess_overrides: dict[str, Any] | None = None
        self.llm_lora_settings: dict[str, Any] | None = None  # set by llm_lora.add_lora
        self.load_report: dict[str, Any] = {}
        self._init_trainable_weights()
        self.register_forward_pre_hook(_take_dropout_keys, with_kwargs=True)
        self.register_forward_hook(_drop_dropout_keys, always_call=True)
        self.visual_encoder.to(DTYPES[vit_precision])
        self.llm.to(DTYPES[llm_precision])
        self.configure_trainable()

    # -- what trains ---------------------------------------------------------------
    def _init_trainable_weights(self) -> None:
        """BERT-style init of the new parts (checkpoints overwrite it)."""
        nn.init.normal_(self.query_tokens, std=0.02)
        bert_style_init_(self.qformer, self.llm_proj)

    def configure_trainable(self) -> dict[str, int]:
        """The one place that decides what trains: query tokens, Q-Former, `ln_vision`,
        projection (plus the ViT when `freeze_vit` is False) and, when `model.llm_lora`
        added them, the LLM's LoRA adapters (counted as "llm_lora"). The LLM's own weights
        never train. Returns trainable parameter counts per part (also logged)."""
        trainable = set(TRAINABLE_PARTS) | (set() if self.freeze_vit else {"visual_encoder"})
        counts: dict[str, int] = {}
        for name, param in self.named_parameters():
            part = name.split(".", 1)[0]
            if part == "llm" and is_adapter_parameter(name):
                part, trains = "llm_lora", True
            else:
                trains = part in trainable
            param.requires_grad_(trains)
            if trains:
                counts[part] = counts.get(part, 0) + param.numel()
        logger.info("trainable parameters: %s", counts)
        self._adapter_dropouts = adapter_dropouts(self.llm) if self.llm_lora_settings else []
        self.train(self.training)
        return counts

    def set_llm_train_mode(self, mode: str) -> None:
        """`lavis` (default): the frozen LLM follows `train()` / `eval()` as in LAVIS, which
        only turns its gradients off, so its own dropout (FlanT5, OPT: 0.1) is active in
        training; `eval`: the frozen LLM stays in eval mode, no dropout."""
        if mode not in LLM_TRAIN_MODES:
            raise ConfigError(f"model.llm_train_mode: '{mode}' is not one of "
                              f"{', '.join(LLM_TRAIN_MODES)}.")
        self.llm_train_mode = mode
        self.train(self.training)

    def train(self, mode: bool = True) -> "QFormerLLM":
        """A frozen ViT stays in eval mode (no drop-path) whatever `mode` is, and so does
        the frozen LLM with `llm_train_mode: eval`; the LoRA adapters' dropout follows
        `mode`."""
        super().train(mode)
        frozen = [self.visual_encoder] if self.freeze_vit else []
        if self.llm_train_mode == "eval":
            frozen.append(self.llm)
        for module in frozen:
            module.eval()
        for module in self._adapter_dropouts:
            module.train(mode)
        return self

    def trainable_module_names(self) -> list[str]:
        """The trainable parts, plus each LLM layer that carries LoRA adapters."""
        names = list(TRAINABLE_PARTS) + ([] if self.freeze_vit else ["visual_encoder"])
        return names + sorted({n.rsplit(".lora_", 1)[0] for n, _ in self.named_parameters()
                               if n.startswith("llm.") and is_adapter_parameter(n)})

    def require_merged_adapters(self) -> None:
        """Export formats hold plain LLM weights: unmerged adapters would be written under
        names no loader reads."""
        if self.llm_lora_settings:
            raise LavisIbError("the LLM has LoRA adapters that are not merged; call "
                               "model.merge_adapters() before save_pretrained (lavis-ib "
                               "export does).")

    def merge_adapters(self) -> int:
        """Fold the LLM's LoRA adapters into its weights (for export); afterwards the LLM
        has its own module names and nothing of it trains. Returns the merged layers."""
        if not self.llm_lora_settings:
            return 0
        merged = merge_adapters(self.llm)
        self.llm_lora_settings = None
        self.configure_trainable()
        return merged

    def _llm_blocks(self) -> list[nn.Module]:
        names = set(getattr(self.llm, "_no_split_modules", None) or [])
        return [m for m in self.llm.modules() if type(m).__name__ in names]

    def shard_units(self) -> list[nn.Module]:
        """ViT blocks, Q-Former layers, the LoRA adapters' `lora_A` / `lora_B` layers
        (before the LLM blocks holding them, so an fp32 adapter is never in a bf16
        block's unit) and LLM blocks; each unit holds one dtype."""
        adapters = adapter_units(self.llm) if self.llm_lora_settings else []
        return [*self.visual_encoder.blocks, *self.qformer.layers, *adapters,
                *self._llm_blocks()]

    def checkpoint_units(self) -> list[nn.Module]:
        """LLM blocks, whose activations may be recomputed in the backward pass."""
        return self._llm_blocks()

    def set_gradient_checkpointing(self, vit: bool = False, qformer: bool = False) -> None:
        self.visual_encoder.set_grad_checkpointing(bool(vit))
        self.qformer.gradient_checkpointing = bool(qformer)

    # -- the image path (one place) ------------------------------------------------
    def query_outputs(self, image: torch.Tensor, texts: Sequence[str] | None = None,
                      text_tokens=None) -> torch.Tensor:
        """LLM soft prompts (B, T*Q, D_llm) of images (B,C,H,W) or videos (B,C,T,H,W).

        Each video frame goes through ViT and Q-Former (with the sample's text when
        `text_tokens` is given: a function from per-frame texts to (ids, mask)); the
        frames' query outputs are concatenated in time order (no temporal embedding).
        """
        if image.dim() not in (4, 5):
            raise LavisIbError(f"image must be (B, C, H, W) or (B, C, T, H, W); got shape "
                               f"{tuple(image.shape)}.")
        if texts is not None and len(texts) != image.shape[0]:
            raise LavisIbError(f"{len(texts)} instructions for a batch of {image.shape[0]}.")
        b, frames = image.shape[0], 1
        if image.dim() == 5:
            frames = image.shape[2]
            image = image.permute(0, 2, 1, 3, 4).reshape(b * frames, *image.shape[1:2], *image.shape[3:])
            texts = None if texts is None else [t for t in texts for _ in range(frames)]
        image = image.to(self.device)
        with torch.no_grad() if self.freeze_vit else contextlib.nullcontext():
            vit_out = encode_images(self.visual_encoder, image)
        tokens = self.ln_vision(vit_out.to(self.ln_vision.weight.dtype))
        queries = self.query_tokens.expand(tokens.shape[0], -1, -1)
        if text_tokens is not None and texts is not None:
            ids, mask = text_tokens(texts)
            out = self.qformer(queries, tokens, ids, mask)
        else:
            out = self.qformer(queries, tokens)
        prefix = self.llm_proj(out)
        return prefix.reshape(b, frames * prefix.shape[1], prefix.shape[2])

    # -- the LLM family ---------------------------------------------------------------
    def set_packing(self, mode) -> bool:
        """`run.packing` for the training loss: decoder-only LLMs pack their micro-batches
        where the family computes that exactly (`llm.packing`); encoder-decoder LLMs stay
        padded ("true" raises a ConfigError for them). Returns whether training packs."""
        setter = getattr(self.adapter, "set_packing", None)
        if setter is not None:
            return setter(mode)
        if str(mode).lower() == "true":
            raise ConfigError("run.packing is true but encoder-decoder LLMs (FlanT5) train "
                              "on padded micro-batches only; set run.packing to auto or false.")
        return False

    @staticmethod
    def loss_output(loss_sum: torch.Tensor, num_tokens: torch.Tensor) -> dict:
        """The training contract's output: the batch mean beside the sum and the count
        the runner normalises by globally."""
        return {"loss": loss_sum / num_tokens.clamp(min=1), "loss_sum": loss_sum,
                "num_tokens": num_tokens}

    @property
    def llm_family(self) -> str:
        """The family evaluation settings are keyed by: "vicuna" (LLaMA), "flant5" (T5),
        else the LLM's transformers `model_type` ("opt", "mistral", ...)."""
        model_type = self.llm.config.model_type
        return FAMILY_OF_MODEL_TYPE.get(model_type, model_type)

    @property
    def default_append_eos(self) -> bool:
        """Encoder-decoder LLMs score candidates with EOS, decoder-only ones without (the
        paper's per-family choice for InstructBLIP's ranking evaluations)."""
        return bool(self.llm.config.is_encoder_decoder)

    def check_llm_vocab(self) -> None:
        """The LLM tokenizer must fit the LLM's embedding table."""
        rows = self.llm.get_input_embeddings().weight.shape[0]
        if len(self.llm_tokenizer) > rows:
            raise LavisIbError(f"the LLM tokenizer has {len(self.llm_tokenizer)} tokens but the "
                               f"LLM embeds {rows}; use the tokenizer saved with the checkpoint.")

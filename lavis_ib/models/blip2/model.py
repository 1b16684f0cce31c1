"""BLIP-2: frozen ViT -> Q-Former (queries only) -> projection -> frozen OPT or FlanT5.

The image path, the freezing decision, generation and candidate ranking are those of
every Q-Former model (`components.qformer_model.QFormerLLM`, `components.inference`);
what is BLIP-2's own is the Q-Former without a text side (the queries never read the
prompt) and LAVIS's training layouts:

* `blip2_opt` trains on `text_input` as the caption: [soft prompts ; `</s>` prompt caption
  "\\n"], the loss on everything after the prompt's tokens (with an empty prompt the `</s>`
  is a target too, as in LAVIS); a batch that also has `text_output` (lavis_ib's
  instruction datasets) is trained on `text_input` + " " + `text_output`, the
  instruction as the unscored prompt. Generation stops at the id of "\\n", which is also
  the end token `append_eos` scores;
* `blip2_t5` trains on `text_input` (encoder, after the soft prompts) and `text_output`
  (decoder, with `</s>`), like InstructBLIP's FlanT5 layout.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
from torch import nn

from lavis_ib.common.errors import LavisIbError
from lavis_ib.common.registry import registry
from lavis_ib.models.blip2.build import build_from_config
from lavis_ib.models.blip2.hf_format import save_pretrained as save_hf_directory
from lavis_ib.models.components.qformer import QFormerSpec
from lavis_ib.models.components.qformer_llm import QFormerLLM
from lavis_ib.models.components.vision import VisionSpec
from lavis_ib.models.weights.hf import merge_preprocess

logger = logging.getLogger(__name__)


def _check_keys(samples: dict[str, Any], keys: Sequence[str]) -> None:
    for key in keys:
        if key not in samples:
            raise LavisIbError(f"forward(samples): missing key '{key}' (have {sorted(samples)}).")


class Blip2(QFormerLLM):
    """What `blip2_opt` and `blip2_t5` share: the Q-Former without a text side, building
    and export. Arguments as `QFormerLLM` (without the text side)."""

    def __init__(self, vision: VisionSpec, qformer: QFormerSpec, llm: nn.Module, llm_tokenizer,
                 num_query_token: int = 32, ln_vision_eps: float = 1e-5, max_txt_len: int = 32,
                 max_output_txt_len: int = 32, prompt: str = "", freeze_vit: bool = True,
                 vit_precision: str = "fp32", llm_precision: str = "fp32") -> None:
        super().__init__(vision, qformer, llm, llm_tokenizer, num_query_token=num_query_token,
                         ln_vision_eps=ln_vision_eps, qformer_text_side=False,
                         max_txt_len=max_txt_len, max_output_txt_len=max_output_txt_len,
                         prompt=prompt, freeze_vit=freeze_vit, vit_precision=vit_precision,
                         llm_precision=llm_precision)
        self.truncated = 0   # training texts cut at max_txt_len, counted over the model's life

    def encode(self, image: torch.Tensor, instructions: Sequence[str] | None = None) -> torch.Tensor:
        """LLM soft prompts (B, T*Q, D_llm). BLIP-2's queries do not read the prompt, so
        `instructions` (passed by the shared inference code) are not used."""
        return self.query_outputs(image)

    @classmethod
    def from_config(cls, cfg: Any) -> "Blip2":
        """Build from a model config node (see `blip2.build` for the keys and routes)."""
        return build_from_config(cls, cfg)

    def save_pretrained(self, directory: str) -> str:
        """Write the Hugging Face `Blip2ForConditionalGeneration` + `Blip2Processor` layout."""
        self.require_merged_adapters()
        return save_hf_directory(self, directory)

    def preprocess_config(self, default: Any) -> Any:
        """`default` with the checkpoint's eval image settings (HF directories)."""
        return merge_preprocess(default, self.preprocess_overrides)


@registry.register_model("blip2_opt")
class Blip2OPT(Blip2):
    """BLIP-2 with an OPT LLM (LAVIS's `blip2_opt`); `llm_family` "opt"."""

    PRETRAINED_MODEL_CONFIG_DICT = {
        "pretrain_opt2.7b": "configs/models/blip2_opt/pretrain_opt2.7b.yaml",
        "pretrain_opt6.7b": "configs/models/blip2_opt/pretrain_opt6.7b.yaml",
        "caption_coco_opt2.7b": "configs/models/blip2_opt/caption_coco_opt2.7b.yaml",
        "caption_coco_opt6.7b": "configs/models/blip2_opt/caption_coco_opt6.7b.yaml",
        "tiny_opt": "configs/models/blip2_opt/tiny_opt.yaml",
    }
    DEFAULT_MODEL_TYPE = "pretrain_opt2.7b"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.llm.config.is_encoder_decoder:
            raise LavisIbError("blip2_opt needs a decoder-only LLM (OPT); use blip2_t5 for T5.")
        newline = self.llm_tokenizer("\n", add_special_tokens=False).input_ids
        if not newline:
            raise LavisIbError("the OPT tokenizer encodes '\\n' to nothing; BLIP-2 OPT ends "
                               "every caption with it.")
        # LAVIS's OPT captions end with "\n": generation stops there and ranking with
        # append_eos=True scores it after a candidate (the adapter's end token).
        self.newline_id = int(newline[0])
        self.adapter.eos_id = self.newline_id

    def _caption_ids(self, prompts: Sequence[str], texts: Sequence[str]):
        """(prompt ids, target ids) per text as LAVIS builds them: the tokenizer's own
        special tokens + text + "\\n", cut at `max_txt_len`, the prompt's tokens (which
        begin the text) unscored; with an empty prompt the leading `</s>` is scored."""
        prompt_ids, targets, cut = [], [], 0
        for prompt, text in zip(prompts, texts):
            n_prompt = len(self.llm_tokenizer(prompt).input_ids) if prompt else 0
            ids = self.llm_tokenizer(text + "\n").input_ids
            cut += len(ids) > self.max_txt_len
            ids = ids[: self.max_txt_len]
            prompt_ids.append(ids[:n_prompt])
            targets.append(ids[n_prompt:])
        if cut:
            self.truncated += cut
            logger.warning("blip2_opt: %d captions cut at max_txt_len=%d tokens (%d so far)",
                           cut, self.max_txt_len, self.truncated)
        return prompt_ids, targets

    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Caption loss: {"loss", "loss_sum", "num_tokens"}.

        LAVIS's samples: `text_input` is the caption, beginning with the model's `prompt`
        when it has one (LAVIS's caption processor writes it there). lavis_ib's
        instruction datasets give `text_output` too: then the text is `text_input` +
        " " + `text_output` and the instruction is the unscored prompt.
        """
        _check_keys(samples, ("image", "text_input"))
        inputs = list(samples["text_input"])
        if samples.get("text_output") is not None:
            outputs = list(samples["text_output"])
            prompts = inputs
            texts = [f"{p} {o}" if p else o for p, o in zip(inputs, outputs)]
        else:
            prompts, texts = [self.prompt] * len(inputs), inputs
        prompt_ids, targets = self._caption_ids(prompts, texts)
        prefix = self.encode(samples["image"])
        if not any(targets):   # every text cut inside its prompt: nothing to score
            zero = prefix.sum() * 0.0
            return self.loss_output(zero, torch.zeros((), dtype=torch.long, device=zero.device))
        return self.loss_output(*self.adapter.loss(prefix, prompt_ids, targets))


@registry.register_model("blip2_t5")
class Blip2T5(Blip2):
    """BLIP-2 with a FlanT5 LLM (LAVIS's `blip2_t5`); `llm_family` "flant5"."""

    PRETRAINED_MODEL_CONFIG_DICT = {
        "pretrain_flant5xl": "configs/models/blip2_t5/pretrain_flant5xl.yaml",
        "pretrain_flant5xxl": "configs/models/blip2_t5/pretrain_flant5xxl.yaml",
        "caption_coco_flant5xl": "configs/models/blip2_t5/caption_coco_flant5xl.yaml",
        "tiny_flant5": "configs/models/blip2_t5/tiny_flant5.yaml",
    }
    DEFAULT_MODEL_TYPE = "pretrain_flant5xl"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.llm.config.is_encoder_decoder:
            raise LavisIbError("blip2_t5 needs an encoder-decoder LLM (T5); use blip2_opt for OPT.")

    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Loss of `text_output` given image and `text_input` (encoder side):
        {"loss", "loss_sum", "num_tokens"}."""
        _check_keys(samples, ("image", "text_input", "text_output"))
        texts, outputs = list(samples["text_input"]), list(samples["text_output"])
        prefix = self.encode(samples["image"])
        return self.loss_output(*self.adapter.loss(prefix, self.adapter.tokenize_prompts(texts),
                                                  self.adapter.tokenize_targets(outputs)))

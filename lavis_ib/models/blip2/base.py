"""What every BLIP-2 stage-2 model shares: the Q-Former without a text side of its own
(the queries never read the prompt), the stage-1 text side carried frozen when the model
was built from a source that holds it (`text_side`), building and export."""
from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
from torch import nn

from lavis_ib.common.errors import ConfigError, LavisIbError
from lavis_ib.models.blip2.build import build_from_config
from lavis_ib.models.blip2.hf_format import save_pretrained as save_hf_directory
from lavis_ib.models.blip2.init import init_from as init_stage2_from
from lavis_ib.models.blip2.text_side import CarriedLMHead, freeze_carried
from lavis_ib.models.components.qformer import QFormer, QFormerSpec
from lavis_ib.models.components.qformer_llm import QFormerLLM
from lavis_ib.models.components.vision import VisionSpec
from lavis_ib.models.generation import BLIP2 as _B
from lavis_ib.models.generation import ContextFitted
from lavis_ib.models.weights.hf import merge_preprocess

logger = logging.getLogger(__name__)


def check_keys(samples: dict[str, Any], keys: Sequence[str]) -> None:
    for key in keys:
        if key not in samples:
            raise LavisIbError(f"forward(samples): missing key '{key}' (have {sorted(samples)}).")


class Blip2(QFormerLLM):
    """What `blip2_opt`, `blip2_t5` and `blip2_llm` share. Arguments as `QFormerLLM`
    (without the text side), plus:

    Args:
        stage2_objective: None, or "prefix_lm" (encoder-decoder LLMs: captions without a
            target are split into encoder prefix and decoder suffix, `prefix_lm`).
        carry_text_side: build the Q-Former's text side, frozen, to carry stage 1's.
        carry_lm_head: hold stage 1's ITG head (`lm_head`), frozen, to carry it.
    """

    #: the stage-2 objectives the subclass trains with (None: its caption layout)
    STAGE2_OBJECTIVES: tuple = (None,)

    def __init__(self, vision: VisionSpec, qformer: QFormerSpec, llm: nn.Module, llm_tokenizer,
                 num_query_token: int = 32, ln_vision_eps: float = 1e-5, max_txt_len: int = 32,
                 max_output_txt_len: int = 32, prompt: str = "", freeze_vit: bool = True,
                 vit_precision: str = "fp32", llm_precision: str = "fp32",
                 stage2_objective: str | None = None, carry_text_side: bool = False,
                 carry_lm_head: bool = False) -> None:
        if stage2_objective not in self.STAGE2_OBJECTIVES:
            raise ConfigError(f"{type(self).__name__}: stage2_objective '{stage2_objective}' is "
                              f"not one of {self.STAGE2_OBJECTIVES}.")
        super().__init__(vision, qformer, llm, llm_tokenizer, num_query_token=num_query_token,
                         ln_vision_eps=ln_vision_eps, qformer_text_side=bool(carry_text_side),
                         max_txt_len=max_txt_len, max_output_txt_len=max_output_txt_len,
                         prompt=prompt, freeze_vit=freeze_vit, vit_precision=vit_precision,
                         llm_precision=llm_precision)
        self.stage2_objective = stage2_objective
        self.truncated = 0   # training texts cut at max_txt_len, counted over the model's life
        if carry_lm_head:
            self.lm_head = CarriedLMHead(qformer.hidden_size, qformer.vocab_size,
                                         qformer.layer_norm_eps)
            self.configure_trainable()

    @property
    def carries_text_side(self) -> bool:
        return self.qformer.text_input

    def add_carried_parts(self, text_side: bool, lm_head: bool) -> None:
        """Give the model the stage-1 parts a weight source will fill (built model, before
        `init_from`): the Q-Former's text side (the Q-Former rebuilt with it, its query
        side kept) and the ITG head; both frozen. New tensors start from a fixed seed, so
        every process builds the same model whatever the global RNG holds."""
        text_side = text_side and not self.carries_text_side
        lm_head = lm_head and not hasattr(self, "lm_head")
        if not (text_side or lm_head):
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            if text_side:
                qformer = QFormer(self.qformer_spec, text_input=True)
                result = qformer.load_state_dict(self.qformer.state_dict(), strict=False)
                if result.unexpected_keys:   # the query side has the same names either way
                    raise LavisIbError(f"Q-Former tensors {result.unexpected_keys} have no place "
                                       f"in the Q-Former with a text side.")
                qformer.gradient_checkpointing = self.qformer.gradient_checkpointing
                self.qformer = qformer.to(self.query_tokens.device)
            if lm_head:
                spec = self.qformer_spec
                self.lm_head = CarriedLMHead(spec.hidden_size, spec.vocab_size,
                                             spec.layer_norm_eps).to(self.query_tokens.device)
        self.configure_trainable()

    def configure_trainable(self) -> dict[str, int]:
        """`QFormerLLM`'s decision, with the carried stage-1 text side and ITG head frozen."""
        counts = super().configure_trainable()
        carried = freeze_carried(self.named_parameters())
        if carried:
            counts["qformer"] = sum(p.numel() for n, p in self.named_parameters()
                                    if n.startswith("qformer.") and p.requires_grad)
            logger.info("stage-1 text side carried frozen: %d parameters (trainable now %s)",
                        carried, counts)
        return counts

    @torch.no_grad()
    def generate(self, samples: dict[str, Any],
                 use_nucleus_sampling: bool = _B.use_nucleus_sampling,
                 num_beams: int = _B.num_beams, max_length: int = ContextFitted(_B.max_length),
                 min_length: int = _B.min_length, top_p: float = _B.top_p,
                 repetition_penalty: float = _B.repetition_penalty,
                 length_penalty: float = _B.length_penalty, num_captions: int = _B.num_captions,
                 temperature: float = _B.temperature, max_new_tokens: int | None = None,
                 do_sample: bool | None = None, top_k: int | None = None,
                 stream: bool = False) -> list[str]:
        """`QFormerLLM.generate` with LAVIS's BLIP-2 defaults (`generation.BLIP2`: beam 5,
        at most 30 tokens, no repetition penalty); `predict_answers` uses them too."""
        return self._generate(samples, use_nucleus_sampling=use_nucleus_sampling,
                              num_beams=num_beams, max_length=max_length,
                              min_length=min_length, top_p=top_p,
                              repetition_penalty=repetition_penalty,
                              length_penalty=length_penalty, num_captions=num_captions,
                              temperature=temperature, max_new_tokens=max_new_tokens,
                              do_sample=do_sample, top_k=top_k, stream=stream)

    def encode(self, image: torch.Tensor,
               instructions: Sequence[str] | None = None) -> torch.Tensor:
        """LLM soft prompts (B, T*Q, D_llm). BLIP-2's queries do not read the prompt, so
        `instructions` (passed by the shared inference code) are not used."""
        return self.query_outputs(image)

    @classmethod
    def from_config(cls, cfg: Any) -> "Blip2":
        """Build from a model config node (see `blip2.build` for the keys and routes)."""
        return build_from_config(cls, cfg)

    def init_from(self, sources: Sequence[Any], allow_random_init: bool = False) -> dict:
        """Initialise the trainable parts (and the carried text side) from stage-1 or
        stage-2 checkpoints (see `blip2.init`)."""
        return init_stage2_from(self, sources, allow_random_init=allow_random_init)

    def save_pretrained(self, directory: str) -> str:
        """Write the Hugging Face `Blip2ForConditionalGeneration` + `Blip2Processor` layout
        (and the carried text side beside it, `hf_format`)."""
        self.require_merged_adapters()
        return save_hf_directory(self, directory)

    def preprocess_config(self, default: Any) -> Any:
        """`default` with the checkpoint's eval image settings (HF directories)."""
        return merge_preprocess(default, self.preprocess_overrides)

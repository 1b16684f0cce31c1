"""BLIP-2 with a decoder-only LLM: `blip2_opt` (LAVIS's) and `blip2_llm` (LLaMA/Vicuna and
any other causal LM: Qwen2, Mistral, Phi-3, Gemma-2, ...).

One caption layout serves OPT and every other causal LM, so stage 2 runs on any of them
as LAVIS runs it on OPT (the layout and its one difference: `Blip2DecoderOnly`)."""
from __future__ import annotations

import logging
from typing import Any, Sequence

import torch

from lavis_ib.common.errors import LavisIbError
from lavis_ib.common.registry import registry
from lavis_ib.models.blip2.base import Blip2, check_keys

logger = logging.getLogger(__name__)


def newline_id(tokenizer) -> int:
    """The id "\\n" adds after a word: one token, whatever the tokenizer prepends to a
    text's first word (SentencePiece's "\\u2581", say)."""
    probe = tokenizer("a", add_special_tokens=False).input_ids
    both = tokenizer("a\n", add_special_tokens=False).input_ids
    if both[:len(probe)] != probe or len(both) != len(probe) + 1:
        raise LavisIbError(f"the LLM tokenizer ({type(tokenizer).__name__}) does not encode "
                           f"'\\n' as one token after a word ('a' -> {probe}, 'a\\n' -> "
                           f"{both}); BLIP-2's decoder-only captions end with it.")
    return int(both[-1])


class Blip2DecoderOnly(Blip2):
    """The decoder-only caption layout.

    Stage-2 pretraining is language modelling of the caption after the soft prompts, as
    LAVIS's `blip2_opt.forward` does it: the text is `text_input` + "\\n", tokenized with the
    tokenizer's own special tokens and cut at `max_txt_len`; the loss covers every token
    after the model's `prompt` (LAVIS's caption processor writes the prompt at the start of
    `text_input`). Generation stops at "\\n", which is also the end token ranking with
    `append_eos` scores. A batch that also has `text_output` (lavis_ib's instruction
    datasets) is trained on `text_input` + " " + `text_output`, the instruction unscored.

    One difference: with an empty prompt LAVIS's OPT scores the leading `</s>` its tokenizer
    prepends (its loss mask starts at the prompt's length only when there is a prompt);
    `blip2_opt` keeps that (`SCORE_LEADING_BOS`), `blip2_llm` never scores a leading BOS.
    """

    #: score the BOS the tokenizer prepends when the prompt is empty (LAVIS's OPT does)
    SCORE_LEADING_BOS = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.llm.config.is_encoder_decoder:
            raise LavisIbError(f"{type(self).__name__} needs a decoder-only LLM; use blip2_t5 "
                               f"for an encoder-decoder one (T5).")
        # Captions end with "\n": generation stops there and ranking with append_eos=True
        # scores it after a candidate (the adapter's end token).
        self.newline_id = newline_id(self.llm_tokenizer)
        self.adapter.eos_id = self.newline_id

    def _unscored(self, prompt: str, ids: list[int]) -> int:
        if prompt:
            return len(self.llm_tokenizer(prompt).input_ids)
        bos = self.llm_tokenizer.bos_token_id
        leading = bool(ids) and bos is not None and ids[0] == bos
        return 0 if self.SCORE_LEADING_BOS or not leading else 1

    def _caption_ids(self, prompts: Sequence[str], texts: Sequence[str]):
        """(prompt ids, target ids) per text: the tokenizer's own special tokens + text +
        "\\n", cut at `max_txt_len`, the prompt's tokens (which begin the text) unscored."""
        prompt_ids, targets, cut = [], [], 0
        for prompt, text in zip(prompts, texts):
            ids = self.llm_tokenizer(text + "\n").input_ids
            n_prompt = self._unscored(prompt, ids)
            cut += len(ids) > self.max_txt_len
            ids = ids[: self.max_txt_len]
            prompt_ids.append(ids[:n_prompt])
            targets.append(ids[n_prompt:])
        if cut:
            self.truncated += cut
            logger.warning("%s: %d captions cut at max_txt_len=%d tokens (%d so far)",
                           type(self).__name__, cut, self.max_txt_len, self.truncated)
        return prompt_ids, targets

    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Caption loss: {"loss", "loss_sum", "num_tokens"}.

        LAVIS's samples: `text_input` is the caption, beginning with the model's `prompt`
        when it has one. lavis_ib's instruction datasets give `text_output` too: then the
        text is `text_input` + " " + `text_output` and the instruction is the unscored prompt.
        """
        check_keys(samples, ("image", "text_input"))
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


@registry.register_model("blip2_opt")
class Blip2OPT(Blip2DecoderOnly):
    """BLIP-2 with an OPT LLM (LAVIS's `blip2_opt`); `llm_family` "opt"."""

    PRETRAINED_MODEL_CONFIG_DICT = {
        "pretrain_opt2.7b": "configs/models/blip2_opt/pretrain_opt2.7b.yaml",
        "pretrain_opt6.7b": "configs/models/blip2_opt/pretrain_opt6.7b.yaml",
        "caption_coco_opt2.7b": "configs/models/blip2_opt/caption_coco_opt2.7b.yaml",
        "caption_coco_opt6.7b": "configs/models/blip2_opt/caption_coco_opt6.7b.yaml",
        "tiny_opt": "configs/models/blip2_opt/tiny_opt.yaml",
    }
    DEFAULT_MODEL_TYPE = "pretrain_opt2.7b"
    SCORE_LEADING_BOS = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prompts_cut = 0   # inference prompts cut at max_txt_len, over the model's life

    def inference_rows(self, prompts: Sequence[str], soft: int, budget: int) -> list[list[int]]:
        """LAVIS's `blip2_opt` feeds at most `max_txt_len` prompt tokens at inference
        (generation, short answers; ranking here too), the prompt's start kept, its BOS
        included: each prompt is cut so, counted in `num_prompts_cut` (the first cut
        logged), then the context rule of every model applies."""
        tokenizer = self.adapter.tokenizer
        rows = [tokenizer(text, add_special_tokens=True).input_ids for text in prompts]
        cut = sum(len(row) > self.max_txt_len for row in rows)
        if cut:
            if not self.prompts_cut:
                logger.warning("blip2_opt: a %d-token prompt is cut to its first max_txt_len=%d "
                               "tokens, as LAVIS's blip2_opt reads it; further cuts are counted "
                               "in num_prompts_cut", max(len(r) for r in rows), self.max_txt_len)
            self.prompts_cut += cut
        return self.adapter.fit_to_context([row[:self.max_txt_len] for row in rows], soft,
                                           budget)

    def inference_counts(self) -> dict[str, int]:
        """`num_truncated` and `num_prompts_cut`: prompts cut at `max_txt_len`."""
        return {**super().inference_counts(), "num_prompts_cut": self.prompts_cut}


@registry.register_model("blip2_llm")
class Blip2LLM(Blip2DecoderOnly):
    """BLIP-2 with any decoder-only LLM (`AutoModelForCausalLM`): Vicuna/LLaMA, Qwen2,
    Mistral, Phi-3, Gemma-2, ...; `llm_family` as `QFormerLLM` names it ("vicuna" for
    LLaMA models, else the transformers model type). `vicuna7b` reads LAVIS's
    `blip2_pretrained_vicuna7b.pth` (LAVIS #344); the tiny types are random."""

    PRETRAINED_MODEL_CONFIG_DICT = {
        "vicuna7b": "configs/models/blip2_llm/vicuna7b.yaml",
        "vicuna13b": "configs/models/blip2_llm/vicuna13b.yaml",
        "tiny_vicuna": "configs/models/blip2_llm/tiny_vicuna.yaml",
        "tiny_llama3": "configs/models/blip2_llm/tiny_llama3.yaml",
        "tiny_qwen2": "configs/models/blip2_llm/tiny_qwen2.yaml",
        "tiny_mistral": "configs/models/blip2_llm/tiny_mistral.yaml",
        "tiny_phi3": "configs/models/blip2_llm/tiny_phi3.yaml",
        "tiny_gemma2": "configs/models/blip2_llm/tiny_gemma2.yaml",
    }
    DEFAULT_MODEL_TYPE = "vicuna7b"

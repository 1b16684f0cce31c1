"""`blip2_t5`: BLIP-2 with an encoder-decoder LLM (FlanT5).

Trains instruction data as LAVIS's `blip2_t5` does and, for stage-2 pretraining on
captions alone, the paper's prefix language modelling (the layouts: `Blip2T5`)."""
from __future__ import annotations

import logging
from typing import Any

import torch

from lavis_ib.common.errors import LavisIbError
from lavis_ib.common.registry import registry
from lavis_ib.models.blip2.base import Blip2, check_keys
from lavis_ib.models.blip2.prefix_lm import SEED_KEY, split_captions
from lavis_ib.models.llm.trie import WHOLE

logger = logging.getLogger(__name__)


@registry.register_model("blip2_t5")
class Blip2T5(Blip2):
    """BLIP-2 with a FlanT5 LLM (LAVIS's `blip2_t5`); `llm_family` "flant5".

    Instruction data (`text_input` + `text_output`) trains as LAVIS's `blip2_t5` does:
    `text_input` to the encoder after the soft prompts, `text_output` + `</s>` as the
    decoder's target. With `stage2_objective: prefix_lm` (stage-2 pretraining), a caption
    sample is split into encoder prefix and decoder suffix (`prefix_lm`); a caption sample
    is one with only `text_input` (LAVIS's caption datasets), or with an empty `text_input`
    beside its caption in `text_output` (lavis_ib's caption datasets under the plain
    `blip_caption` processor).
    """

    PRETRAINED_MODEL_CONFIG_DICT = {
        "pretrain_flant5xl": "configs/models/blip2_t5/pretrain_flant5xl.yaml",
        "pretrain_flant5xxl": "configs/models/blip2_t5/pretrain_flant5xxl.yaml",
        "caption_coco_flant5xl": "configs/models/blip2_t5/caption_coco_flant5xl.yaml",
        "tiny_flant5": "configs/models/blip2_t5/tiny_flant5.yaml",
    }
    DEFAULT_MODEL_TYPE = "pretrain_flant5xl"
    STAGE2_OBJECTIVES = (None, "prefix_lm")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.llm.config.is_encoder_decoder:
            raise LavisIbError("blip2_t5 needs an encoder-decoder LLM (T5); use blip2_opt or "
                               "blip2_llm for a decoder-only one.")
        self.prefix_lm_counts = {"samples": 0, "unsplit": 0, "text_seeded": 0}

    def _texts(self, samples: dict[str, Any]) -> tuple[list[str], list[str]]:
        """(encoder texts, decoder targets) of a batch: instruction samples as they are,
        caption samples split when the stage-2 objective is prefix LM."""
        inputs = [str(t) for t in samples["text_input"]]
        outputs = samples.get("text_output")
        if outputs is None:
            if self.stage2_objective != "prefix_lm":
                raise LavisIbError("blip2_t5 trains on text_input (encoder) + text_output "
                                   "(decoder target); for captions alone (stage-2 "
                                   "pretraining) set model.stage2_objective: prefix_lm.")
            captions = list(range(len(inputs)))
            outputs = [""] * len(inputs)
        else:
            outputs = [str(t) for t in outputs]
            captions = ([i for i, t in enumerate(inputs) if not t.strip()]
                        if self.stage2_objective == "prefix_lm" else [])
        if captions:
            text = [inputs[i] if samples.get("text_output") is None else outputs[i]
                    for i in captions]
            seeds = samples.get(SEED_KEY)
            split = split_captions(text, None if seeds is None else [seeds[i] for i in captions])
            for j, i in enumerate(captions):
                inputs[i], outputs[i] = split.prefixes[j], split.suffixes[j]
            self._count(len(captions), split.unsplit, split.text_seeded)
        return inputs, outputs

    def _count(self, samples: int, unsplit: int, text_seeded: int) -> None:
        counts = self.prefix_lm_counts
        first = {k: not counts[k] for k in ("unsplit", "text_seeded")}
        counts["samples"] += samples
        counts["unsplit"] += unsplit
        counts["text_seeded"] += text_seeded
        if unsplit and first["unsplit"]:
            logger.warning("prefix LM: a caption of fewer than two words is not split (empty "
                           "prefix, the caption as the target); counted in prefix_lm_counts")
        if text_seeded and first["text_seeded"]:
            logger.warning("prefix LM: samples without '%s' are split at a point drawn from "
                           "their caption's CRC-32 (the same split every epoch); counted in "
                           "prefix_lm_counts", SEED_KEY)

    def _encoder_rows(self, texts: list[str]) -> tuple[list[list[int]], int]:
        """(encoder ids, number cut): each text with the tokenizer's special tokens (T5: a
        closing `</s>`), its words cut from the right to fit `max_txt_len`, the special
        tokens kept, as LAVIS's `blip2_t5` tokenizes its training text."""
        tokenizer, limit = self.adapter.tokenizer, self.max_txt_len
        rows, cut = [], 0
        for text in texts:
            ids = tokenizer(text, add_special_tokens=True).input_ids
            if len(ids) > limit:
                plain = tokenizer(text, add_special_tokens=False).input_ids
                extra = len(ids) - len(plain)
                head = next((h for h in range(extra + 1) if ids[h:h + len(plain)] == plain), None)
                if head is None:
                    raise LavisIbError(f"blip2_t5: the LLM tokenizer ({type(tokenizer).__name__}) "
                                       f"adds special tokens inside the text; cannot cut "
                                       f"{text[:40]!r} at max_txt_len={limit}.")
                ids = ids[:head] + plain[:max(0, limit - extra)] + ids[head + len(plain):]
                cut += 1
            rows.append(ids)
        return rows, cut

    def _target_rows(self, outputs: list[str]) -> tuple[list[list[int]], int]:
        """(decoder targets + EOS, number cut): cut from the right at `max_output_txt_len`
        tokens, the EOS kept (LAVIS cuts its `text_output` so, at its `max_txt_len`)."""
        limit = self.max_output_txt_len
        rows = self.adapter.tokenize_targets(outputs, append_eos=True, limit=WHOLE)
        cut = sum(len(r) > limit for r in rows)
        return [r if len(r) <= limit else r[:limit - 1] + r[-1:] for r in rows], cut

    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Loss of the decoder targets given image and encoder text:
        {"loss", "loss_sum", "num_tokens"} (the layouts: the class docstring). Encoder text
        and targets are cut from the right (`_encoder_rows`, `_target_rows`); cuts are counted
        in `truncated` and logged."""
        check_keys(samples, ("image", "text_input"))
        texts, outputs = self._texts(samples)
        prompts, cut_in = self._encoder_rows(texts)
        targets, cut_out = self._target_rows(outputs)
        if cut_in or cut_out:
            self.truncated += cut_in + cut_out
            logger.warning("blip2_t5: %d encoder texts cut at max_txt_len=%d and %d targets at "
                           "max_output_txt_len=%d tokens, from the right (%d so far)", cut_in,
                           self.max_txt_len, cut_out, self.max_output_txt_len, self.truncated)
        prefix = self.encode(samples["image"])
        return self.loss_output(*self.adapter.loss(prefix, prompts, targets))

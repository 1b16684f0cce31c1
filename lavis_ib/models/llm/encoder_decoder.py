"""The encoder-decoder adapter (FlanT5, any `AutoModelForSeq2SeqLM`): the encoder reads
[soft prompts ; instruction], the decoder the target; candidate ranking reuses the
encoder output and expands the candidates' token trie level by level (`score_trie`, see
`trie_encoder_decoder`); `score` is the per-candidate procedure it replaced.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lavis_ib.models.generation import ENCODER_DECODER_MAX_PROMPT_TOKENS
from lavis_ib.models.llm.trie import CandidateTrie
from lavis_ib.models.llm.base import LLMAdapter, cache_kwarg, run_generate, pad_rows
from lavis_ib.models.llm.trie_encoder_decoder import LevelScorer


class EncoderDecoderAdapter(LLMAdapter):
    """FlanT5 (any `AutoModelForSeq2SeqLM`).

    Relative positions set no context limit, so inference prompts are cut (from the left,
    counted in `num_truncated`) at `max_prompt_tokens` instead: a number above every
    shipped evaluation prompt (`models.generation.ENCODER_DECODER_MAX_PROMPT_TOKENS`),
    so LAVIS's results are unchanged; set `model.adapter.max_prompt_tokens` to change it.
    """

    is_encoder_decoder = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_prompt_tokens = ENCODER_DECODER_MAX_PROMPT_TOKENS

    def prompt_room(self, prefix_len: int, budget: int) -> int | None:
        """`max_prompt_tokens`, whatever the soft prompts (the encoder reads them beside
        the prompt) and the tokens to generate (the decoder's)."""
        return int(self.max_prompt_tokens)

    def prompt_limit_words(self, prefix_len: int, budget: int) -> str:
        return "max_prompt_tokens of the encoder-decoder LLM"

    def _encoder_inputs(self, prefix: torch.Tensor, prompts: list[list[int]]):
        b, p, d = prefix.shape
        ids, mask = pad_rows(prompts, self.pad_id)
        ids, mask = ids.to(self.device), mask.to(prefix.device)
        embeds = torch.cat([prefix.to(self.dtype), self._embed_ids(ids)], dim=1)
        mask = torch.cat([torch.ones((b, p), dtype=torch.long, device=prefix.device), mask], dim=1)
        return embeds, mask

    def _decoder_inputs(self, targets: list[list[int]]):
        start = self.llm.config.decoder_start_token_id
        start = self.pad_id if start is None else start
        ids, mask = pad_rows(targets, self.pad_id)
        dec = torch.cat([torch.full((ids.shape[0], 1), start, dtype=torch.long), ids[:, :-1]], 1)
        return ids.to(self.device), mask.to(self.device), dec.to(self.device)

    def loss(self, prefix: torch.Tensor, prompts: list[list[int]], targets: list[list[int]]):
        embeds, mask = self._encoder_inputs(prefix, prompts)
        ids, tmask, dec = self._decoder_inputs(targets)
        logits = self.llm(inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=dec,
                          decoder_attention_mask=tmask, use_cache=False).logits
        labels = ids.masked_fill(tmask == 0, -100)
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                              ignore_index=-100, reduction="sum")
        return nll, tmask.sum()

    def generate(self, prefix: torch.Tensor, prompts: list[list[int]], **settings) -> torch.Tensor:
        """As the authors' code calls T5's `generate`: `max_length` counts generated tokens,
        `min_length` counts the decoder start token too (at least `min_length - 1` new
        tokens; `min_length=1` lets the answer end at once)."""
        embeds, mask = self._encoder_inputs(prefix, prompts)
        settings["min_length"] = max(0, int(settings["min_length"]) - 1)
        kwargs = self._generation_kwargs(eos_id=self.eos_id, pad_id=self.pad_id, **settings)
        return run_generate(self.llm, inputs_embeds=embeds, attention_mask=mask, **kwargs)

    def score(self, prefix: torch.Tensor, prompts: list[list[int]],
              rows: list[tuple[int, list[int]]], chunk_size: int) -> torch.Tensor:
        from transformers.modeling_outputs import BaseModelOutput

        embeds, mask = self._encoder_inputs(prefix, prompts)
        encoded = self.llm.get_encoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        scores = []
        for start in range(0, len(rows), chunk_size):
            chunk = rows[start:start + chunk_size]
            index = torch.as_tensor([s for s, _ in chunk], device=encoded.device)
            ids, tmask, dec = self._decoder_inputs([c for _, c in chunk])
            logits = self.llm(encoder_outputs=BaseModelOutput(last_hidden_state=encoded[index]),
                              attention_mask=mask[index], decoder_input_ids=dec,
                              decoder_attention_mask=tmask, use_cache=False).logits
            scores.append((self._token_logprobs(logits, ids) * tmask).sum(-1))
        return torch.cat(scores) if scores else torch.zeros(0, device=prefix.device)

    def score_trie(self, prefix: torch.Tensor, prompts: list[list[int]],
                   tries: list[CandidateTrie], chunk_size: int) -> list[torch.Tensor]:
        """Per sample, summed log-probs of its trie's candidates: the encoder runs once per
        sample, the decoder one row per trie node, `chunk_size` rows per forward."""
        embeds, mask = self._encoder_inputs(prefix, prompts)
        encoded = self.llm.get_encoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        start = self.llm.config.decoder_start_token_id
        start = self.pad_id if start is None else start
        return LevelScorer(self.llm, cache_kwarg(self.llm), encoded, mask, tries,
                           chunk_size).run(int(start))

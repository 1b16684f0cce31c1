"""Each training sample's token count as the model's LLM will see it (soft prompts +
instruction + target, after the model's own truncation), for the token-budget split of
micro-batches (`run.max_tokens_per_micro_batch`). Text is tokenized exactly as the model's
`forward` tokenizes it, without its side effects (truncation counters, log lines)."""
from __future__ import annotations

from typing import Any, Mapping

from lavis_ib.common.errors import ConfigError


def soft_prompts(model: Any, batch: Mapping[str, Any]) -> list[int]:
    """Soft prompts per sample: the model's queries times the sample's frames (a video
    (B, C, T, H, W) has T, an image one)."""
    queries = int(model.query_tokens.shape[1])
    image = batch["image"]
    frames = int(image.shape[2]) if image.dim() == 5 else 1
    return [queries * frames] * int(image.shape[0])


def _instruction_rows(model: Any, batch: Mapping[str, Any]) -> list[int]:
    """InstructBLIP: instruction with the tokenizer's special tokens, left-truncated at
    `max_txt_len`; target + EOS, right-truncated at `max_output_txt_len`."""
    prompts = model.adapter.tokenize_prompts([str(t) for t in batch["text_input"]])
    targets = model.adapter.tokenize_targets([str(t) for t in batch["text_output"]])
    return [len(p) + len(t) for p, t in zip(prompts, targets)]


def _blip2_decoder_only_rows(model: Any, batch: Mapping[str, Any]) -> list[int]:
    """BLIP-2 decoder-only: `text_input` (+ " " + `text_output`) + "\\n", with special
    tokens, cut at `max_txt_len` (its `_caption_ids`, without counting the cuts)."""
    inputs = [str(t) for t in batch["text_input"]]
    outputs = batch.get("text_output")
    texts = inputs if outputs is None else [f"{p} {o}" if p else str(o)
                                            for p, o in zip(inputs, outputs)]
    return [min(len(model.llm_tokenizer(t + "\n").input_ids), model.max_txt_len) for t in texts]


def _blip2_t5_rows(model: Any, batch: Mapping[str, Any]) -> list[int]:
    """BLIP-2 T5: encoder text and decoder target as its `forward` cuts them."""
    texts, outputs = model._texts(batch)
    encoder, _ = model._encoder_rows(texts)
    targets, _ = model._target_rows(outputs)
    return [len(e) + len(t) for e, t in zip(encoder, targets)]


def supports_token_counts(model: Any) -> bool:
    """Whether `training_token_counts` knows `model`'s token layout."""
    return callable(getattr(model, "sample_token_counts", None)) or (
        hasattr(model, "query_tokens") and hasattr(model, "adapter"))


def require_token_counts(model: Any) -> None:
    """Raises ConfigError, naming the fix, when `training_token_counts` cannot count for
    `model` (checked when training starts, before any data is loaded)."""
    if not supports_token_counts(model):
        raise ConfigError(f"run.max_tokens_per_micro_batch needs each sample's token count, and "
                          f"model {type(model).__name__} has no sample_token_counts(samples); "
                          f"add one or unset run.max_tokens_per_micro_batch.")


def training_token_counts(model: Any, batch: Mapping[str, Any]) -> list[int]:
    """Tokens of each sample of the collated training `batch`: the model's own
    `sample_token_counts(batch)` when it has one, else soft prompts + the text the
    Q-Former models' `forward` tokenizes (InstructBLIP, BLIP-2 decoder-only, BLIP-2 T5).

    Raises:
        ConfigError: a model whose token layout is unknown here.
    """
    own = getattr(model, "sample_token_counts", None)
    if callable(own):
        return [int(n) for n in own(batch)]
    require_token_counts(model)
    if hasattr(model, "_encoder_rows") and hasattr(model, "_target_rows"):
        text = _blip2_t5_rows(model, batch)
    elif hasattr(model, "_caption_ids"):
        text = _blip2_decoder_only_rows(model, batch)
    else:
        text = _instruction_rows(model, batch)
    return [s + t for s, t in zip(soft_prompts(model, batch), text)]

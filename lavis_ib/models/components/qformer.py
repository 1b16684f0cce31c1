"""The instruction-aware Q-Former: learned queries that read the image for the LLM.

One compact module written for InstructBLIP rather than a copy of BERT, so that it also
serves, without a second implementation, as BLIP-2's queries-only Q-Former and as its
stage-1 text encoder and decoder; the layout is on `QFormer`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lavis_ib.common.errors import ConfigError
from lavis_ib.models.components.sample_dropout import (SampleDropout, attention, frame_keys,
                                                       name_sites)

_ACTS = {"gelu": nn.GELU, "gelu_new": lambda: nn.GELU(approximate="tanh"), "relu": nn.ReLU}


@dataclass
class QFormerSpec:
    """Sizes of the Q-Former (the fields of transformers' `InstructBlipQFormerConfig`)."""

    vocab_size: int = 30523
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    cross_attention_frequency: int = 2
    encoder_hidden_size: int = 1408

    @classmethod
    def from_mapping(cls, node) -> "QFormerSpec":
        node = dict(node or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(node) - known)
        if unknown:
            raise ConfigError(f"model.qformer: unknown keys {unknown}; known: {sorted(known)}.")
        spec = cls(**node)
        if spec.hidden_size % spec.num_attention_heads:
            raise ConfigError(f"model.qformer: hidden_size {spec.hidden_size} is not a multiple "
                              f"of num_attention_heads {spec.num_attention_heads}.")
        if spec.hidden_act not in _ACTS:
            raise ConfigError(f"model.qformer.hidden_act '{spec.hidden_act}' unsupported; "
                              f"use one of {sorted(_ACTS)}.")
        return spec

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def bert_style_init_(*modules: nn.Module) -> None:
    """BERT's random init of every Linear/Embedding/LayerNorm in `modules`, in order:
    N(0, 0.02) weights, zero biases, unit norms (what checkpoints then overwrite)."""
    for module in modules:
        for m in module.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


class Attention(nn.Module):
    """Multi-head attention + output projection + residual post-LayerNorm."""

    def __init__(self, dim: int, kv_dim: int, heads: int, dropout: float, attn_dropout: float,
                 eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(kv_dim, dim)
        self.v = nn.Linear(kv_dim, dim)
        self.out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = SampleDropout(dropout)
        self.attn_probs_dropout = SampleDropout(attn_dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, keys: torch.Tensor | None = None) -> torch.Tensor:
        """`mask`: boolean (B, 1, 1, S) where True means the key may be attended to;
        `keys`: per-sample dropout keys (B, 2) or None."""
        context = x if context is None else context
        q, k, v = self._split(self.q(x)), self._split(self.k(context)), self._split(self.v(context))
        attn = attention(q, k, v, mask, self.attn_probs_dropout, keys)
        attn = attn.transpose(1, 2).reshape(x.shape)
        return self.norm(x + self.dropout(self.out(attn), keys))


class FeedForward(nn.Module):
    """fc1 -> activation -> fc2 with a residual post-LayerNorm."""

    def __init__(self, dim: int, hidden: int, act: str, dropout: float, eps: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = _ACTS[act]()
        self.fc2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = SampleDropout(dropout)

    def forward(self, x: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        return self.norm(x + self.dropout(self.fc2(self.act(self.fc1(x))), keys))


class QFormerLayer(nn.Module):
    def __init__(self, spec: QFormerSpec, cross_attention: bool, text_input: bool = True) -> None:
        super().__init__()
        d, h = spec.hidden_size, spec.num_attention_heads
        args = (spec.hidden_dropout_prob, spec.attention_probs_dropout_prob, spec.layer_norm_eps)
        self.self_attn = Attention(d, d, h, *args)
        self.cross_attn = Attention(d, spec.encoder_hidden_size, h, *args) if cross_attention else None
        ffn = (d, spec.intermediate_size, spec.hidden_act, spec.hidden_dropout_prob,
               spec.layer_norm_eps)
        self.ffn_query = FeedForward(*ffn)
        self.ffn_text = FeedForward(*ffn) if text_input else None

    def forward(self, x: torch.Tensor, image: torch.Tensor | None, mask: torch.Tensor | None,
                num_queries: int, prefix: torch.Tensor | None = None,
                keys: torch.Tensor | None = None) -> torch.Tensor:
        """With `num_queries` 0, `x` is text alone (no image; `prefix`: query states
        its self-attention also reads, see `QFormer.decode_text`). `keys`: per-sample
        dropout keys or None."""
        context = x if prefix is None else torch.cat([prefix.to(x.dtype), x], dim=1)
        x = self.self_attn(x, context=context, mask=mask, keys=keys)
        if num_queries == 0:
            return self.ffn_text(x, keys)
        queries, text = x[:, :num_queries], x[:, num_queries:]
        if self.cross_attn is not None:
            queries = self.cross_attn(queries, context=image, keys=keys)
        queries = self.ffn_query(queries, keys)
        if text.shape[1] == 0:
            return queries
        return torch.cat([queries, self.ffn_text(text, keys)], dim=1)


class QFormer(nn.Module):
    """A compact post-LayerNorm transformer written for InstructBLIP (not a BERT copy):

    * the input is [query tokens ; instruction tokens]; queries have no position embedding,
      instruction tokens get absolute positions from 0; the concatenation is layer-normed;
    * self-attention over the whole sequence is bidirectional (padding mask only), so the
      queries see the instruction and vice versa;
    * every `cross_attention_frequency`-th layer (0, 2, 4, ...) lets the queries (only)
      attend to the image tokens;
    * queries and text have separate feed-forward networks (`ffn_query` / `ffn_text`);
    * only the query outputs leave the module.

    With `text_ids=None` it is BLIP-2's Q-Former (the "w/o instruction-aware" ablation);
    built with `text_input=False` it has no text side at all (no word/position embeddings,
    no `ffn_text`), as BLIP-2's stage-2 models, whose checkpoints hold only the query side.
    BLIP-2's stage 1 also runs the text side without queries (`encode_text`,
    `decode_text`). Attention uses `torch.nn.functional.scaled_dot_product_attention`;
    layers can be recomputed in the backward pass (`gradient_checkpointing = True`).

    Dropout (hidden and attention-probability) draws each sample's mask from the sample's
    key when training batches carry keys (`sample_keys`, set per forward by the model from
    the batch; `lavis_ib.models.components.sample_dropout`), so any split of a global batch
    over processes gives the same masks; attention probabilities are then computed
    explicitly (SDPA takes no generator). Without keys it is ordinary dropout.

    Args:
        spec: the sizes.
        text_input: build the text side (embeddings, `ffn_text`); False: queries only.
    """

    def __init__(self, spec: QFormerSpec, text_input: bool = True) -> None:
        super().__init__()
        self.spec = spec
        self.text_input = bool(text_input)
        d = spec.hidden_size
        if self.text_input:
            self.word_embeddings = nn.Embedding(spec.vocab_size, d, padding_idx=spec.pad_token_id)
            self.position_embeddings = nn.Embedding(spec.max_position_embeddings, d)
        self.embed_norm = nn.LayerNorm(d, eps=spec.layer_norm_eps)
        self.embed_dropout = SampleDropout(spec.hidden_dropout_prob)
        self.layers = nn.ModuleList(
            QFormerLayer(spec, i % spec.cross_attention_frequency == 0, self.text_input)
            for i in range(spec.num_hidden_layers))
        self.gradient_checkpointing = False
        name_sites(self)
        #: per-sample dropout keys (B, 2) of the batch being run, set by the model around
        #: its forward; None: ordinary dropout
        self.sample_keys: torch.Tensor | None = None

    def forward(self, queries: torch.Tensor, image: torch.Tensor,
                text_ids: torch.Tensor | None = None,
                text_mask: torch.Tensor | None = None,
                query_states: list | None = None,
                sample_keys: torch.Tensor | None = None) -> torch.Tensor:
        """Query outputs (B, Q, D).

        Args:
            queries: (B, Q, D) query embeddings (the expanded learned tokens).
            image: (B, N, encoder_hidden_size) image tokens (after `ln_vision`).
            text_ids: (B, L) instruction token ids, or None (no instruction).
            text_mask: (B, L) 1 for tokens, 0 for padding.
            query_states: a list that receives each layer's input (B, Q, D), the keys and
                values `decode_text` attends to (a query pass without text only).
            sample_keys: per-sample dropout keys (B or B/T video samples, 2); default
                `self.sample_keys`.
        """
        if query_states is not None and text_ids is not None:
            raise ValueError("query_states are the states of a query pass without text")
        num_queries = queries.shape[1]
        x, mask = queries, None
        if text_ids is not None and text_ids.shape[1] > 0:
            if not self.text_input:
                raise ValueError("this Q-Former has no text side (text_input=False); call it "
                                 "without text_ids")
            if text_ids.shape[1] > self.spec.max_position_embeddings:
                raise ValueError(f"Q-Former instruction of {text_ids.shape[1]} tokens exceeds "
                                 f"max_position_embeddings {self.spec.max_position_embeddings}")
            positions = torch.arange(text_ids.shape[1], device=text_ids.device)
            text = self.word_embeddings(text_ids) + self.position_embeddings(positions)[None]
            x = torch.cat([queries, text.to(queries.dtype)], dim=1)
            if text_mask is not None:
                keep = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
                keep[:, num_queries:] = text_mask.bool()
                mask = keep[:, None, None, :]
        keys = self.sample_keys if sample_keys is None else sample_keys
        keys = None if keys is None or not self.training else frame_keys(keys, x.shape[0])
        x = self.embed_dropout(self.embed_norm(x), keys)
        image = image.to(x.dtype)
        for layer in self.layers:
            if query_states is not None:
                query_states.append(x)
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, image, mask, num_queries, None, keys, use_reentrant=False)
            else:
                x = layer(x, image, mask, num_queries, None, keys)
        return x[:, :num_queries]

    # -- the text side alone (BLIP-2 stage 1: ITC text encoder, ITG decoder) -----------
    def _embed_text(self, text_ids: torch.Tensor) -> torch.Tensor:
        if not self.text_input:
            raise ValueError("this Q-Former has no text side (text_input=False)")
        if text_ids.shape[1] > self.spec.max_position_embeddings:
            raise ValueError(f"Q-Former text of {text_ids.shape[1]} tokens exceeds "
                             f"max_position_embeddings {self.spec.max_position_embeddings}")
        positions = torch.arange(text_ids.shape[1], device=text_ids.device)
        text = self.word_embeddings(text_ids) + self.position_embeddings(positions)[None]
        return self.embed_dropout(self.embed_norm(text), self._training_keys(text.shape[0]))

    def _training_keys(self, batch: int) -> torch.Tensor | None:
        """This forward's per-sample dropout keys (None: ordinary dropout)."""
        keys = self.sample_keys
        return None if keys is None or not self.training else frame_keys(keys, batch)

    def _text_layers(self, x: torch.Tensor, mask: torch.Tensor,
                     query_states: list | None) -> torch.Tensor:
        keys = self._training_keys(x.shape[0])
        for i, layer in enumerate(self.layers):
            prefix = None if query_states is None else query_states[i]
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, None, mask, 0, prefix, keys, use_reentrant=False)
            else:
                x = layer(x, None, mask, 0, prefix, keys)
        return x

    def encode_text(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Text outputs (B, L, D) of the text alone (BLIP-2's ITC text encoder):
        bidirectional self-attention over the text (padding masked), the text feed-forward,
        no queries and no image."""
        mask = text_mask.bool()[:, None, None, :]
        return self._text_layers(self._embed_text(text_ids), mask, None)

    def decode_text(self, text_ids: torch.Tensor, text_mask: torch.Tensor,
                    query_states: list) -> torch.Tensor:
        """Text outputs (B, L, D) of the causal pass (BLIP-2's ITG): token i attends to
        every query (the layer inputs of a query pass, `forward(..., query_states=[])`) and
        to text tokens j <= i that are not padding; the queries never see the text. Text
        positions start at 0; only the text feed-forward runs."""
        if len(query_states) != len(self.layers):
            raise ValueError(f"{len(query_states)} query states for {len(self.layers)} layers")
        b, n = text_ids.shape
        num_queries = query_states[0].shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=text_ids.device).tril()
        text_keys = causal[None] & text_mask.bool()[:, None, :]
        query_keys = torch.ones(b, n, num_queries, dtype=torch.bool, device=text_ids.device)
        mask = torch.cat([query_keys, text_keys], dim=2)[:, None]
        return self._text_layers(self._embed_text(text_ids), mask, query_states)

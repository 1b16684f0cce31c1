"""`char_lm`: a model added by decorator (docs/adding_a_model.md).

A deliberately small image-conditioned language model in plain torch: a frozen
convolutional image encoder, a trainable bridge that turns the image feature into the
initial state of a GRU, and a GRU over characters. It has no tokenizer: text is a
sequence of printable ASCII characters plus three special ids (padding, the start of the
answer, the end of the answer). It is here to show the model contract, not to be good.

A sequence is ``prompt chars, BOS, answer chars, EOS``; the loss covers the answer and
EOS. The prompt's hidden state is computed once per sample and shared by every beam and
every ranked candidate. Import this module through a project's ``plugins:`` list.
"""
from __future__ import annotations

import math
import os
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence

from lavis_ib import registry
from lavis_ib.common.errors import DataError
from lavis_ib.models import BaseModel

PAD, BOS, EOS = 0, 1, 2
FIRST_CHAR, LAST_CHAR = 32, 126                 # printable ASCII, space to tilde
VOCAB_SIZE = 3 + LAST_CHAR - FIRST_CHAR + 1


def encode_text(text: str) -> list[int]:
    """Character ids of `text` (lower case; characters outside printable ASCII -> '?')."""
    return [3 + (ord(c) if FIRST_CHAR <= ord(c) <= LAST_CHAR else ord("?")) - FIRST_CHAR
            for c in str(text).lower()]


def decode_ids(ids: Sequence[int]) -> str:
    """Text of character ids; the special ids are dropped."""
    return "".join(chr(i - 3 + FIRST_CHAR) for i in ids if i >= 3)


@registry.register_model("char_lm")
class CharLM(BaseModel):
    """Image -> frozen conv features -> GRU state -> character-level answer."""

    PRETRAINED_MODEL_CONFIG_DICT = {
        "tiny": os.path.join(os.path.dirname(os.path.abspath(__file__)), "char_lm.yaml"),
    }

    def __init__(self, width: int = 16, hidden: int = 64, patch: int = 8,
                 max_prompt_chars: int = 96, max_output_chars: int = 32) -> None:
        super().__init__()
        self.max_prompt_chars, self.max_output_chars = max_prompt_chars, max_output_chars
        self.vision = nn.Conv2d(3, width, kernel_size=patch, stride=patch)
        self.bridge = nn.Linear(width, hidden)
        self.embed = nn.Embedding(VOCAB_SIZE, hidden, padding_idx=PAD)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, VOCAB_SIZE)
        self.vision.requires_grad_(False)       # frozen, like InstructBLIP's ViT

    @classmethod
    def from_config(cls, cfg: Any) -> "CharLM":
        keys = ("width", "hidden", "patch", "max_prompt_chars", "max_output_chars")
        return cls(**{k: int(cfg[k]) for k in keys if k in cfg})

    # -- the contract's declarations ---------------------------------------------------
    @property
    def llm_family(self) -> str:
        """The key this model's values take in per-family dataset settings."""
        return "charlm"

    @property
    def default_append_eos(self) -> bool:
        """Rank candidates with EOS: the model learnt to stop after an answer, so '2' is
        then not favoured over '21' just for being its prefix."""
        return True

    def trainable_module_names(self) -> list[str]:
        return ["bridge", "embed", "gru", "head"]

    # -- shared pieces -------------------------------------------------------------------
    def _prefix(self, image: torch.Tensor, prompts: Sequence[str]):
        """(hidden state after ``prompt, BOS``, log-probabilities of the next char)."""
        if image.dim() != 4:
            raise DataError(f"char_lm reads images (B, C, H, W); got shape {tuple(image.shape)}.")
        state = torch.tanh(self.bridge(self.vision(image).mean(dim=(2, 3)))).unsqueeze(0)
        ids = [encode_text(p)[-self.max_prompt_chars:] + [BOS] for p in prompts]
        out, state = self._run(ids, state)
        last = out[torch.arange(len(ids)), torch.tensor([len(i) - 1 for i in ids])]
        return state, self.head(last).log_softmax(-1)

    def _run(self, ids: Sequence[Sequence[int]], state: torch.Tensor):
        """GRU over right-padded id lists from `state`: (outputs (B, T, H), final state)."""
        device = self.head.weight.device
        padded = pad_sequence([torch.tensor(i, device=device) for i in ids], batch_first=True,
                              padding_value=PAD)
        lengths = torch.tensor([len(i) for i in ids])
        packed = pack_padded_sequence(self.embed(padded), lengths, batch_first=True,
                                      enforce_sorted=False)
        out, state = self.gru(packed, state)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
        return out, state

    @staticmethod
    def _prompts(samples: dict[str, Any]) -> list[str]:
        prompts = samples.get("prompt", samples.get("text_input"))
        if prompts is None:
            raise DataError("char_lm needs 'prompt' or 'text_input' in the samples.")
        n = samples["image"].shape[0]
        return [prompts] * n if isinstance(prompts, str) else [str(p) for p in prompts]

    # -- training ------------------------------------------------------------------------
    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        """{"loss", "loss_sum", "num_tokens"}: summed answer-char NLL and its count."""
        state, first = self._prefix(samples["image"], list(samples["text_input"]))
        targets = [encode_text(t)[: self.max_output_chars] + [EOS]
                   for t in samples["text_output"]]
        loss_sum = -first[torch.arange(len(targets)), [t[0] for t in targets]].sum()
        out, _ = self._run([t[:-1] or [PAD] for t in targets], state)
        logp = self.head(out).log_softmax(-1)
        for i, t in enumerate(targets):
            if len(t) > 1:
                loss_sum = loss_sum - logp[i, torch.arange(len(t) - 1), t[1:]].sum()
        num_tokens = torch.tensor(sum(len(t) for t in targets), device=loss_sum.device)
        return {"loss": loss_sum / num_tokens, "loss_sum": loss_sum, "num_tokens": num_tokens}

    # -- evaluation ----------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, samples: dict[str, Any], num_beams: int = 1, max_length: int = 10,
                 min_length: int = 1, length_penalty: float = 0.0) -> list[str]:
        """One answer per sample by beam search. Lengths count generated characters;
        a finished beam scores sum(log p) / length ** length_penalty."""
        states, firsts = self._prefix(samples["image"], self._prompts(samples))
        return [decode_ids(self._beam_search(states[:, i:i + 1], firsts[i], num_beams,
                                             max_length, min_length, length_penalty))
                for i in range(firsts.shape[0])]

    def _beam_search(self, state, logp, num_beams, max_length, min_length, length_penalty):
        beams, finished = [([], 0.0, state, logp)], []
        for step in range(max_length):
            expanded = []
            for ids, score, st, lp in beams:
                lp = lp.clone()
                if step < min_length:
                    lp[EOS] = -math.inf
                values, tokens = lp.topk(num_beams)
                expanded += [(ids + [int(t)], score + float(v), st) for v, t in zip(values, tokens)]
            expanded.sort(key=lambda b: -b[1])
            beams = []
            for ids, score, st in expanded[:num_beams]:
                if ids[-1] == EOS:
                    finished.append((score / len(ids) ** length_penalty, ids[:-1]))
                    continue
                out, st = self.gru(self.embed(torch.tensor([[ids[-1]]], device=st.device)), st)
                beams.append((ids, score, st, self.head(out[0, -1]).log_softmax(-1)))
            if not beams:
                break
        finished += [(score / max(len(ids), 1) ** length_penalty, ids) for ids, score, _, _ in beams]
        return max(finished, key=lambda f: f[0])[1]

    @torch.no_grad()
    def score_candidates(self, samples: dict[str, Any], candidates: Sequence,
                         append_eos: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-probability of each candidate: (scores (B, C), mask (B, C)).

        `candidates` is one list for the batch or one list per sample; ragged lists are
        padded with -inf scores and False in the mask. None: `default_append_eos`.
        """
        append_eos = self.default_append_eos if append_eos is None else bool(append_eos)
        states, firsts = self._prefix(samples["image"], self._prompts(samples))
        n = firsts.shape[0]
        lists = [list(candidates)] * n if candidates and isinstance(candidates[0], str) \
            else [list(c) for c in candidates]
        width = max(len(c) for c in lists)
        scores = torch.full((n, width), -math.inf, device=firsts.device)
        for i, cands in enumerate(lists):
            ids = [encode_text(c) + ([EOS] if append_eos else []) for c in cands]
            if not all(ids):
                raise DataError(f"char_lm: an empty candidate in {cands!r} has nothing to score.")
            out, _ = self._run([c[:-1] or [PAD] for c in ids],
                               states[:, i:i + 1].expand(-1, len(ids), -1).contiguous())
            logp = self.head(out).log_softmax(-1)
            for j, c in enumerate(ids):
                scores[i, j] = firsts[i, c[0]] + logp[j, torch.arange(len(c) - 1), c[1:]].sum()
        mask = torch.tensor([[j < len(c) for j in range(width)] for c in lists],
                            device=scores.device)
        return scores, mask

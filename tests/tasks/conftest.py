"""Shared helpers of the task tests: a deterministic fake model with the Model API."""
from __future__ import annotations

import math

import pytest
import torch

from lavis_ib.models import BaseModel


class FakeModel:
    """Implements generate / score_candidates deterministically (the model contract).

    generate: the answer is `answers[prompt]` when the prompt is known, else `default`.
    score_candidates: a candidate's score is `scores[candidate]` when given, else
    -(1 + 0.1 * len(candidate)); with append_eos the score drops by `eos_penalty`.
    `llm_family` keys per-family settings; `default_append_eos` is True for "flant5"
    (InstructBLIP's: encoder-decoder LLMs score with EOS).
    Every call is recorded in `calls` for assertions on prompts and settings.
    """

    def __init__(self, answers=None, default="no idea", scores=None, eos_penalty=0.5,
                 llm_family="vicuna", default_append_eos=None):
        self.answers = dict(answers or {})
        self.default = default
        self.scores = dict(scores or {})
        self.eos_penalty = eos_penalty
        self.llm_family = llm_family
        self.default_append_eos = (llm_family == "flant5" if default_append_eos is None
                                   else default_append_eos)
        self.calls = []

    # the pieces of BaseModel's contract tasks and the loop read besides the two above
    generation_settings = classmethod(BaseModel.generation_settings.__func__)
    inference_counts = BaseModel.inference_counts

    def generate(self, samples, use_nucleus_sampling=False, num_beams=5, max_length=256,
                 min_length=1, top_p=0.9, repetition_penalty=1.5, length_penalty=1,
                 num_captions=1, temperature=1):
        prompts = samples["prompt"]
        prompts = [prompts] * len(samples["image"]) if isinstance(prompts, str) else prompts
        self.calls.append(("generate", list(prompts), {
            "num_beams": num_beams, "max_length": max_length, "min_length": min_length,
            "length_penalty": length_penalty}))
        return [self.answers.get(p, self.default) for p in prompts]

    def _score(self, cand, append_eos):
        s = self.scores.get(cand, -(1.0 + 0.1 * len(cand)))
        return s - (self.eos_penalty if append_eos else 0.0)

    def score_candidates(self, samples, candidates, append_eos=None, chunk_size=None):
        append_eos = self.default_append_eos if append_eos is None else append_eos
        batch = len(samples["prompt"])
        per_sample = (candidates if candidates and isinstance(candidates[0], (list, tuple))
                      else [list(candidates)] * batch)
        self.calls.append(("rank", list(samples["prompt"]), {"append_eos": append_eos,
                                                              "candidates": per_sample}))
        cmax = max(len(c) for c in per_sample)
        scores = torch.full((batch, cmax), -math.inf)
        mask = torch.zeros((batch, cmax), dtype=torch.bool)
        for b, cands in enumerate(per_sample):
            for j, c in enumerate(cands):
                scores[b, j] = self._score(c, append_eos)
                mask[b, j] = True
        return scores, mask

    def predict_class(self, samples, candidates, **kwargs):
        scores, _ = self.score_candidates(samples, candidates, **kwargs)
        return torch.sort(scores, dim=-1, descending=True, stable=True).indices


@pytest.fixture
def fake_model():
    return FakeModel

"""Trie ranking (`candidate_trie`): exact against transformers' forward pass and against the
per-candidate shared-prefix procedure, for each LLM family and both attention kernels.

The reference is `InstructBlipForConditionalGeneration` (loaded from the directory
transformers wrote) run on [<image> x Q ; prompt ; candidate] one candidate at a time, its
log-softmax read at the candidate's positions, as in test_hf_parity.
"""
from __future__ import annotations

import contextlib
import itertools
import random
import string

import pytest
import torch

from lavis_ib.models.llm.trie import CandidateTrie
from tests.models.conftest import IMAGE, Q

PROMPTS = ["What is in the picture?", "A long instruction: is there a cat on the mat?"]
# shared prefixes, a candidate that is a prefix of others, a duplicate, ragged lists
SHARED = ["a red car", "a red", "a", "a dog", "two birds on a wire", "two birds", "yes",
          "no", "a red car", "an owl"]
RAGGED = [SHARED, ["two birds", "two", "cat", "two birds on a wire"]]


def _images(n: int, seed: int = 7) -> torch.Tensor:
    return torch.randn(n, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed))


def _hf_score(fam, hf, processor, image, prompt, cand, append_eos) -> float:
    tok = processor.tokenizer
    tgt = tok(cand, add_special_tokens=False).input_ids + ([tok.eos_token_id] if append_eos else [])
    q = processor.qformer_tokenizer([prompt], return_tensors="pt")
    image_ids = [hf.config.image_token_index] * Q + tok(prompt).input_ids
    with torch.no_grad():
        if fam != "t5":
            ids = torch.tensor([image_ids + tgt])
            logits = hf(pixel_values=image[None], qformer_input_ids=q.input_ids,
                        qformer_attention_mask=q.attention_mask, input_ids=ids).logits
            logp = logits[0, -len(tgt) - 1:-1].log_softmax(-1)
        else:
            logits = hf(pixel_values=image[None], qformer_input_ids=q.input_ids,
                        qformer_attention_mask=q.attention_mask,
                        input_ids=torch.tensor([image_ids]), labels=torch.tensor([tgt])).logits
            logp = logits[0].log_softmax(-1)
    return logp.gather(-1, torch.tensor(tgt)[:, None]).sum().item()


@contextlib.contextmanager
def _attention(model, impl: str):
    before = model.llm.config._attn_implementation
    model.llm.set_attn_implementation(impl)
    try:
        yield
    finally:
        model.llm.set_attn_implementation(before)


def _shared_prefix(model, images, prompts, candidates, append_eos):
    """Today's per-candidate procedure (`adapter.score`) on the same prompts: a flat
    tensor of every sample's candidates in order."""
    prompts = model._prompts({"image": images, "prompt": prompts})
    prefix = model.encode(images, prompts)
    rows = [(i, ids) for i, cands in enumerate(candidates)
            for ids in model.adapter.tokenize_targets(cands, append_eos=append_eos)]
    with torch.no_grad():
        return model.adapter.score(prefix, model.adapter.inference_prompts(
            prompts, prefix.shape[1], 32), rows, 5)


def test_trie_structure():
    """Nodes, internal nodes and per-candidate terminals of a small trie, written out."""
    trie = CandidateTrie([[5, 6, 7], [5, 6], [5, 8], [9], [5, 6, 7]])
    # preorder: 5, 6, 7, 8, 9
    assert trie.tokens.tolist() == [5, 6, 7, 8, 9]
    assert trie.parent.tolist() == [-1, 0, 1, 0, -1]
    assert trie.depth.tolist() == [0, 1, 2, 1, 0]
    assert trie.terminal.tolist() == [2, 1, 3, 4, 2]
    assert trie.internal == [0, 1]
    chunks = trie.chunks(1)
    assert [c.nodes.tolist() for c in chunks] == [[0], [0, 1]]   # ancestor carried as context
    assert chunks[1].allowed.tolist() == [[True, False], [True, True]]
    assert chunks[1].child_nodes.tolist() == [2] and chunks[1].child_src.tolist() == [1]
    logp = torch.tensor([-1.0, -2.0, -4.0, -8.0, -16.0])
    assert trie.path_scores(logp).tolist() == [-7.0, -3.0, -9.0, -16.0, -7.0]


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("fam", ["llama", "opt", "t5"])
def test_trie_scores_exact(fam, impl, hf_models, our_models):
    hf, processor = hf_models[fam]
    model = our_models[fam][0]
    images = _images(2)
    with _attention(model, impl):
        for append_eos, (candidates, chunk) in itertools.product(
                (False, True), ((SHARED, 3), (RAGGED, 64))):
            batch = {"image": images, "prompt": PROMPTS}
            scores, mask = model.score_candidates(batch, candidates, append_eos=append_eos,
                                                  chunk_size=chunk)
            lists = [candidates] * 2 if isinstance(candidates[0], str) else candidates
            assert mask.tolist() == [[j < len(c) for j in range(scores.shape[1])] for c in lists]
            ours = torch.cat([scores[i, :len(c)] for i, c in enumerate(lists)])
            today = _shared_prefix(model, images, PROMPTS, lists, append_eos)
            assert (ours - today).abs().max().item() < 1e-4, (fam, impl, append_eos, chunk)
            ref = torch.tensor([_hf_score(fam, hf, processor, images[i], PROMPTS[i], c, append_eos)
                                for i, cands in enumerate(lists) for c in cands])
            assert (ours - ref).abs().max().item() < 1e-3, (fam, impl, append_eos, chunk)


def _vocabulary(n: int, seed: int = 0) -> list[str]:
    """n distinct short lower-case strings, one and two words (character tokens)."""
    rng = random.Random(seed)
    out = set()
    while len(out) < n:
        word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(1, 4)))
        if rng.random() < 0.2:
            word += " " + "".join(rng.choice("abcde") for _ in range(rng.randint(1, 2)))
        out.add(word)
    return sorted(out)


@pytest.mark.parametrize("fam", ["llama", "t5"])
def test_ten_thousand_candidates(fam, hf_models, our_models):
    hf, processor = hf_models[fam]
    model = our_models[fam][0]
    images = _images(2, seed=11)
    vocab = _vocabulary(10_000)
    builds = model.adapter.tries.builds
    scores, mask = model.score_candidates({"image": images, "prompt": PROMPTS}, vocab,
                                          append_eos=True, chunk_size=512)
    assert scores.shape == (2, 10_000) and bool(mask.all())
    assert torch.isfinite(scores).all()
    rng = random.Random(3)
    for i, j in [(rng.randrange(2), rng.randrange(10_000)) for _ in range(12)]:
        ref = _hf_score(fam, hf, processor, images[i], PROMPTS[i], vocab[j], True)
        assert abs(scores[i, j].item() - ref) < 1e-3, (fam, i, vocab[j])
    # the same list again (the next batch of a split) reuses its trie
    model.score_candidates({"image": images[:1], "prompt": PROMPTS[:1]}, vocab,
                           append_eos=True, chunk_size=512)
    assert model.adapter.tries.builds == builds + 1


def test_video_qa_split_builds_its_trie_once(tiny_vicuna):
    """A video QA split ranks its answer_list batch after batch: tokenised and built into a
    trie once, and each answer is the one today's per-candidate scoring ranks first."""
    from lavis_ib import registry
    from lavis_ib.common.config import compose_dataset

    model = tiny_vicuna
    vocab = ["dog", "dogs", "cat", "a cat", "two", "two dogs", "run", "running", "red"]
    task = registry.get_task_class("video_qa").for_dataset(
        "msrvtt_qa", compose_dataset("msrvtt_qa", {"task": "video_qa"}))
    task.before_evaluation(model, type("Split", (), {"answer_list": list(vocab)})())
    builds = model.adapter.tries.builds
    g = torch.Generator().manual_seed(4)
    for b in range(3):
        batch = {"image": torch.randn(2, 3, 2, 32, 32, generator=g),
                 "question_id": [2 * b, 2 * b + 1], "question": ["what is it?", "how many?"],
                 "text_input": ["what is it", "how many"], "answers": [["dog"], ["two"]]}
        answers = [r["answer"] for r in task.valid_step(model, batch)]
        prompts = [f"Question: {q} Short answer:" for q in batch["text_input"]]
        today = _shared_prefix(model, batch["image"], prompts, [vocab] * 2,
                               model.default_append_eos).view(2, len(vocab))
        assert answers == [vocab[int(i)] for i in today.argmax(-1)]
    assert model.adapter.tries.builds == builds + 1


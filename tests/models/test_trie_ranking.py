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
import yaml
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



# -- candidates scored whole, LAVIS's Vicuna aggregate ------------------------------------
LONG = "two birds sat on a long wire in the rain and then"


@pytest.mark.parametrize("fam", ["llama", "opt", "t5"])
def test_long_candidates_are_scored_whole(fam, hf_models, our_models):
    """Before: candidates were cut at max_output_txt_len (32 tokens here), so these two,
    equal in their first 32 tokens, tied, each off by the tokens left out."""
    hf, processor = hf_models[fam]
    model = our_models[fam][0]
    tok = processor.tokenizer
    cands = [LONG + " flew away", LONG + " sang", "yes"]
    ids = [tok(c, add_special_tokens=False).input_ids for c in cands[:2]]
    limit = model.max_output_txt_len
    assert ids[0][:limit] == ids[1][:limit] and min(map(len, ids)) > limit + 3
    images = _images(2, seed=5)
    for append_eos in (False, True):
        scores, _ = model.score_candidates({"image": images, "prompt": PROMPTS}, cands,
                                           append_eos=append_eos, chunk_size=4)
        ref = torch.tensor([[_hf_score(fam, hf, processor, images[i], PROMPTS[i], c, append_eos)
                             for c in cands] for i in range(2)])
        assert (scores - ref).abs().max().item() < 1e-3, (fam, append_eos)
        assert (scores[:, 0] - scores[:, 1]).abs().min().item() > 1e-2


def test_a_candidate_longer_than_the_context_is_one_error_naming_it(our_models):
    from lavis_ib.common.errors import LavisIbError

    model = our_models["llama"][0]
    tok = model.llm_tokenizer
    context = model.llm.config.max_position_embeddings
    fits = context - Q - 1          # beside the soft prompts and a one-token prompt
    word = "ab "
    per = len(tok(word * 10, add_special_tokens=False).input_ids) / 10
    too_long = (word * int(fits / per + 10)).strip()
    assert len(tok(too_long, add_special_tokens=False).input_ids) > fits
    images = _images(1)
    with pytest.raises(LavisIbError) as err:
        model.score_candidates({"image": images, "prompt": PROMPTS[:1]}, ["yes", too_long])
    message = str(err.value)
    assert "\n" not in message and repr(too_long) in message
    assert f"LLM's {context}-token context holds at most {fits}" in message
    # one that fits is scored whole, the prompt cut from its start to make room (counted)
    longest = tok.decode(tok(too_long, add_special_tokens=False).input_ids[:fits])
    assert len(tok(longest, add_special_tokens=False).input_ids) == fits
    before = model.inference_counts()["num_truncated"]
    scores, _ = model.score_candidates({"image": images, "prompt": PROMPTS[:1]}, ["yes", longest])
    assert torch.isfinite(scores).all()
    assert model.inference_counts()["num_truncated"] == before + 1


def _lavis_vicuna_losses(hf, processor, images, prompts, lists, n_segments):
    """LAVIS's Vicuna ranking, transcribed from its description (salesforce/LAVIS 506965b):
    `predict_class` ranks a list shared by the batch in one pass and per-sample lists one
    sample at a time (blip2_vicuna_instruct.py:443-474); `_predict_class` tokenizes the
    prompts with BOS, right-padded to the pass's longest (:578-585), splits the candidates
    into n_segments runs of n // n_segments, the last taking the rest (:594-600), and
    scores each run as one padded batch [soft prompts ; prompt ; candidate without BOS ;
    padding] (:602-634, concat_text_input_output :123-145) whose loss is taken per row
    with reduction "none": the token losses of the candidate (0 elsewhere) averaged over
    all L - 1 shifted positions (modeling_llama.py:706-717). Returns losses (B, C)."""
    tok = processor.tokenizer
    image_token = processor.tokenizer.convert_tokens_to_ids("<image>")
    shared = isinstance(lists[0], str)
    lists = [lists] * len(prompts) if shared else lists
    rows = [tok(p).input_ids for p in prompts]
    out = torch.full((len(prompts), max(map(len, lists))), float("nan"))
    for i, (prompt, cands) in enumerate(zip(prompts, lists)):
        width = max(map(len, rows)) if shared else len(rows[i])
        q = processor.qformer_tokenizer([prompt], return_tensors="pt")
        cand_ids = [tok(c, add_special_tokens=False).input_ids for c in cands]
        n = len(cands)
        for k in range(n_segments):
            start = k * (n // n_segments)
            end = n if k == n_segments - 1 else start + n // n_segments
            if start == end:
                continue
            seg_width = max(len(c) for c in cand_ids[start:end])
            for j in range(start, end):
                c = cand_ids[j]
                pad = width - len(rows[i]) + seg_width - len(c)
                ids = [image_token] * Q + rows[i] + c + [tok.pad_token_id] * pad
                mask = [1] * (Q + len(rows[i]) + len(c)) + [0] * pad
                labels = [-100] * (Q + len(rows[i])) + c + [-100] * pad
                with torch.no_grad():
                    logits = hf(pixel_values=images[i:i + 1], qformer_input_ids=q.input_ids,
                                qformer_attention_mask=q.attention_mask,
                                input_ids=torch.tensor([ids]),
                                attention_mask=torch.tensor([mask])).logits[0]
                token_losses = torch.nn.functional.cross_entropy(
                    logits[:-1].float(), torch.tensor(labels[1:]), reduction="none")
                out[i, j] = token_losses.mean()
    return out


@pytest.mark.parametrize("candidates,n_segments", [(SHARED, 1), (SHARED, 3), (RAGGED, 2)],
                         ids=["shared-1", "shared-3", "ragged-2"])
def test_lavis_segment_mean_equals_lavis_vicuna_ranking(candidates, n_segments, hf_models,
                                                        our_models):
    hf, processor = hf_models["llama"]
    model = our_models["llama"][0]
    images = _images(2, seed=9)
    batch = {"image": images, "prompt": PROMPTS}
    scores, mask = model.score_candidates(batch, candidates, append_eos=False, chunk_size=4,
                                          aggregate="lavis_segment_mean",
                                          n_segments=n_segments)
    ref = _lavis_vicuna_losses(hf, processor, images, PROMPTS, candidates, n_segments)
    assert torch.allclose(scores[mask], -ref[mask], atol=2e-5)
    summed, _ = model.score_candidates(batch, candidates, append_eos=False)
    assert not torch.allclose(scores[mask], summed[mask])     # a different score
    order = model.predict_class(batch, candidates, n_segments=n_segments, append_eos=False,
                                aggregate="lavis_segment_mean")
    lavis = torch.argsort(ref.nan_to_num(float("inf")), dim=-1, stable=True)
    assert torch.equal(order, lavis)


def test_lavis_segment_mean_is_for_decoder_only_llms(our_models):
    from lavis_ib.common.errors import LavisIbError

    with pytest.raises(LavisIbError, match="LAVIS sums an encoder-decoder LLM's"):
        our_models["t5"][0].score_candidates({"image": _images(1), "prompt": PROMPTS[:1]},
                                             ["yes"], aggregate="lavis_segment_mean")


def test_aggregate_is_a_checked_ranking_setting(tiny_vicuna, tmp_path, fixture_root):
    """`aggregate` in a dataset entry: read by the ranking tasks, per family or not, refused
    under generation or misspelt in the pre-flight, handed to `score_candidates`."""
    from lavis_ib import registry
    from lavis_ib.cli.preflight import checked_config
    from lavis_ib.common.config import compose_dataset
    from lavis_ib.common.errors import ConfigError

    from lavis_ib.models.components import inference
    from lavis_ib.tasks import eval_settings

    assert eval_settings.AGGREGATES == inference.AGGREGATES   # one list, two layers

    def task(entry):
        return registry.get_task_class("classification").for_dataset(
            "vsr", compose_dataset("vsr", entry))

    assert task({}).eval_settings.aggregate_for("vicuna") == "sum"
    per_family = task({"aggregate": {"vicuna": "lavis_segment_mean", "flant5": "sum"}})
    assert per_family.eval_settings.aggregate_for("vicuna") == "lavis_segment_mean"
    assert per_family.eval_settings.aggregate_for("flant5") == "sum"
    with pytest.raises(ConfigError, match=r"datasets.vsr.aggregate: 'mean' is not one of sum, "
                                          r"lavis_segment_mean"):
        task({"aggregate": "mean"})
    fixtures = fixture_root.overrides
    project = tmp_path / "p.yaml"
    project.write_text(yaml.safe_dump({
        "model": {"arch": "instructblip", "model_type": "tiny_vicuna"},
        "datasets": {"ok_vqa": {**fixtures["ok_vqa"], "aggregate": "lavis_segment_mean"}},
        "run": {"evaluate_only": True, "output_dir": str(tmp_path / "out")}}))
    with pytest.raises(ConfigError, match="datasets.ok_vqa.aggregate is only read with "
                                          "inference: rank"):
        checked_config(str(project), training=False)
    # the task hands the setting to the model: its scores are the model's for that aggregate
    t = per_family
    g = torch.Generator().manual_seed(2)
    batch = {"image": torch.randn(2, 3, 32, 32, generator=g), "instance_id": [0, 1],
             "text_input": ["a cat is on the mat", "the dog is under the table"],
             "label": [1, 0]}
    scores, _ = t.run_rank(tiny_vicuna, batch, ["yes", "no"])
    want, _ = tiny_vicuna.score_candidates(t.model_samples(batch), ["yes", "no"],
                                           append_eos=False, aggregate="lavis_segment_mean")
    assert torch.allclose(scores, want)

"""Candidate ranking: shared-prefix scoring vs the LAVIS procedure, on the same model.

LAVIS ranks candidates by running [soft prompts ; prompt ; candidate] for every candidate
(one batched forward per sample, logits over all positions). lavis_ib encodes the image,
runs the Q-Former and the prompt once per sample, keeps the prompt's key/value cache and
feeds only the candidate tokens (and computes logits only where they are scored).

Both procedures start from the same soft prompts (the image is encoded once for both), so
the timing compares the LLM part, which is what differs. The scores must agree to 1e-4.

A second scenario ranks a 1,000-answer vocabulary (bench/ranking_vocab.py) with a third
procedure, the candidates' token trie (what `score_candidates` does now), and prints
`vocab speedup vs LAVIS: N.Nx` and `vocab speedup vs shared prefix: N.Nx`.

    python bench/ranking.py            # Vicuna-shaped bench LLM; asserts the floors
    python bench/ranking.py --smoke    # seconds; used by the tests

The last line printed is `speedup: N.Nx` (the 16-candidate scenario).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # bench/ranking_vocab.py

WORDS = ("please look at the picture and tell me which of the answers below fits it best "
         "yes no red blue cat dog two car sky tree moon a on big small green cars").split()
CANDIDATES = ["yes", "no", "red", "blue", "cat", "dog", "a red car", "two dog",
              "big tree", "small green car", "the sky", "on a tree", "a big red car", "moon",
              "green", "two big green cars"]


def write_word_tokenizer(directory: str) -> str:
    """A LLaMA BPE tokenizer whose merges make each of WORDS one token (so candidates are
    1-4 tokens, as with Vicuna's real vocabulary), saved to `directory`."""
    import string

    from transformers import LlamaTokenizer

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "[PAD]": 3, "\u2581": 4}
    for ch in string.ascii_letters + string.digits + string.punctuation:
        vocab.setdefault(ch, len(vocab))
    merges = []
    for word in WORDS:
        piece = "\u2581"
        for ch in word:
            if piece + ch not in vocab:
                vocab[piece + ch] = len(vocab)
                merges.append((piece, ch))
            piece += ch
    tok = LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, pad_token="[PAD]")
    tok.save_pretrained(directory)
    return directory


def build_model(smoke: bool, num_query_token: int, tokenizer_dir: str):
    from lavis_ib import load_model

    llm = dict(model_type="llama", vocab_size=1000 if smoke else 32000,
               hidden_size=64 if smoke else 512, intermediate_size=128 if smoke else 1376,
               num_hidden_layers=2 if smoke else 8, num_attention_heads=4 if smoke else 8,
               num_key_value_heads=4 if smoke else 8, max_position_embeddings=512,
               bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=False)
    torch.manual_seed(0)
    return load_model("instructblip", "tiny_vicuna", is_eval=True, llm_config=llm,
                      num_query_token=num_query_token, max_txt_len=256,
                      llm_tokenizer=tokenizer_dir)


def make_prompt(tokenizer, n_tokens: int) -> str:
    """A prompt of exactly `n_tokens` tokens (BOS included) for the tiny char tokenizer."""
    words, i = [], 0
    while len(tokenizer(" ".join(words)).input_ids) < n_tokens:
        words.append(WORDS[i % len(WORDS)])
        i += 1
    text = " ".join(words)
    if len(tokenizer(text).input_ids) != n_tokens:
        raise RuntimeError(f"could not build a {n_tokens}-token prompt")
    return text


@torch.no_grad()
def lavis_scores(model, prefix, prompts, candidates, append_eos):
    """The LAVIS procedure: [prefix ; prompt ; candidate] for all candidates of a sample in
    one batched forward, log-probs read from the logits over all positions."""
    adapter = model.adapter
    prompt_ids = adapter.tokenize_prompts(prompts)
    cand_ids = adapter.tokenize_targets(candidates, append_eos=append_eos)
    out = []
    for i in range(prefix.shape[0]):
        n = len(cand_ids)
        embeds, mask, labels = adapter._sequences(prefix[i:i + 1].expand(n, -1, -1),
                                                  [prompt_ids[i]] * n, cand_ids, left=False)
        logits = model.llm(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        target = labels[:, 1:]
        picked = logp.gather(-1, target.clamp(min=0)[..., None]).squeeze(-1)
        out.append((picked * (target != -100)).sum(-1))
    return torch.stack(out)


@torch.no_grad()
def shared_scores(model, prefix, prompts, candidates, append_eos, chunk_size=128):
    adapter = model.adapter
    rows = [(i, ids) for i in range(prefix.shape[0])
            for ids in adapter.tokenize_targets(candidates, append_eos=append_eos)]
    flat = adapter.score(prefix, adapter.tokenize_prompts(prompts), rows, chunk_size)
    return flat.view(prefix.shape[0], len(candidates))


def timed_pair(fn_a, fn_b, repeats: int):
    """(best time a, best time b, result a, result b), runs interleaved after a warm-up; the
    minimum is the least noisy estimate on a shared machine."""
    res_a, res_b = fn_a(), fn_b()
    best_a = best_b = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        res_a = fn_a()
        best_a = min(best_a, time.perf_counter() - start)
        start = time.perf_counter()
        res_b = fn_b()
        best_b = min(best_b, time.perf_counter() - start)
    return best_a, best_b, res_a, res_b


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, no speed floor")
    parser.add_argument("--batch", type=int, default=2, help="samples (images) per call")
    parser.add_argument("--prompt-tokens", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--floor", type=float, default=4.0)
    parser.add_argument("--vocab-floor-lavis", type=float, default=25.0)
    parser.add_argument("--vocab-floor-shared", type=float, default=3.0)
    parser.add_argument("--no-vocab", action="store_true", help="skip the vocabulary scenario")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(args.smoke, 8 if args.smoke else 32, write_word_tokenizer(tmp))
    failures = []
    if not args.no_vocab:
        failures += vocab_scenario(model, args)
    tok = model.llm_tokenizer
    prompt = make_prompt(tok, 30 if args.smoke else args.prompt_tokens)
    lengths = [len(tok(c, add_special_tokens=False).input_ids) for c in CANDIDATES]
    assert min(lengths) >= 1 and max(lengths) <= 4, lengths
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, 32, 32, generator=g)
    prompts = [prompt] * args.batch
    with torch.no_grad():
        prefix = model.encode(images, prompts)    # the image path runs once for both procedures
    llm = model.llm.config
    print(f"LLM: llama vocab {llm.vocab_size}, hidden {llm.hidden_size}, {llm.num_hidden_layers} "
          f"layers; {args.batch} samples x {len(CANDIDATES)} candidates of "
          f"{min(lengths)}-{max(lengths)} tokens; prompt {len(tok(prompt).input_ids)} tokens + "
          f"{prefix.shape[1]} soft prompts; torch threads {torch.get_num_threads()}")
    worst, total_lavis, total_ours = 0.0, 0.0, 0.0
    for append_eos in (False, True):
        t_lavis, t_ours, s_lavis, s_ours = timed_pair(
            lambda: lavis_scores(model, prefix, prompts, CANDIDATES, append_eos),
            lambda: shared_scores(model, prefix, prompts, CANDIDATES, append_eos), args.repeats)
        diff = (s_lavis - s_ours).abs().max().item()
        worst = max(worst, diff)
        total_lavis, total_ours = total_lavis + t_lavis, total_ours + t_ours
        print(f"append_eos={append_eos}: LAVIS procedure {t_lavis * 1e3:.1f} ms, shared prefix "
              f"{t_ours * 1e3:.1f} ms ({t_lavis / t_ours:.1f}x), max |score diff| {diff:.2e}")
    if worst > 1e-4:
        failures.append(f"scores differ by {worst:.2e} (> 1e-4)")
    speedup = total_lavis / total_ours
    if not args.smoke and speedup < args.floor:
        failures.append(f"speedup {speedup:.1f}x below the {args.floor}x floor")
    for failure in failures:
        print(f"FAIL: {failure}")
    print(f"speedup: {speedup:.1f}x")
    return 1 if failures else 0


def vocab_scenario(model, args) -> list[str]:
    """Run bench/ranking_vocab.py's scenario; the failures (exactness, floors) it found."""
    import ranking_vocab

    prompt = make_prompt(model.llm_tokenizer, 30 if args.smoke else args.prompt_tokens)
    worst, (vs_lavis, vs_shared) = ranking_vocab.run(model, timed_pair, args.smoke, args.batch,
                                                     args.repeats, prompt)
    failures = [f"vocab scores differ by {worst:.2e} (> 1e-4)"] if worst > 1e-4 else []
    if not args.smoke:
        if vs_lavis < args.vocab_floor_lavis:
            failures.append(f"vocab speedup vs LAVIS {vs_lavis:.1f}x below {args.vocab_floor_lavis}x")
        if vs_shared < args.vocab_floor_shared:
            failures.append(f"vocab speedup vs shared prefix {vs_shared:.1f}x below "
                            f"{args.vocab_floor_shared}x")
    return failures


if __name__ == "__main__":
    sys.exit(main())

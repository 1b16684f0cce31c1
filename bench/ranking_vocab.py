"""The vocabulary scenario of bench/ranking.py: ranking a video-QA-sized answer list.

1,000 candidate answers like MSVD-QA / MSRVTT-QA answer lists: common English words
(bench/answer_words.txt, a fixed list: no word-frequency package is installed) and a fifth
two-word phrases drawn from them. They are tokenised with a 32,000-entry byte-pair encoding
trained here with the `tokenizers` library (`train_bpe`); its ids are the bench LLM's ids.
The prompt is 100 tokens beside 4 x 32 video soft prompts.

Three procedures score the same rows: the LAVIS procedure ([soft prompts ; prompt ;
candidate] per candidate, in segments: at this scale one forward does not fit), today's
shared prefix (the prompt once, every candidate token after it) and the trie (one position
per distinct candidate prefix). The LAVIS procedure runs on a 100-candidate slice and its
time is scaled by 10: its cost is linear in the number of candidates.
"""
from __future__ import annotations

import os
import random
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SPECIALS = ["<unk>", "<s>", "</s>", "[PAD]"]   # ids 0-3, as the bench LLM's tokenizer


def answer_list(n: int = 1000, phrase_share: float = 0.2, seed: int = 0) -> list[str]:
    """n distinct answers: the most frequent words, then two-word phrases of common words."""
    with open(os.path.join(HERE, "answer_words.txt"), encoding="utf-8") as f:
        words = [w.strip() for w in f if w.strip() and not w.startswith("#")]
    singles = words[:n - round(n * phrase_share)]
    rng, phrases = random.Random(seed), set()
    while len(singles) + len(phrases) < n:
        a, b = rng.sample(words[:400], 2)
        phrases.add(f"{a} {b}")
    return singles + sorted(phrases)


def train_bpe(vocab_size: int, smoke: bool = False):
    """A Metaspace BPE of `vocab_size` entries trained on English text: the Python standard
    library's sources (docstrings and comments, ~5 MB, the same for one Python version) and
    the word list weighted by a Zipf law (word at rank r seen 3000 / r times), so that
    frequent answers are one token and rarer ones split into subwords, as in Vicuna's
    vocabulary. `smoke`: the word list only (seconds faster; a tiny LLM vocabulary)."""
    import glob
    import sysconfig

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    with open(os.path.join(HERE, "answer_words.txt"), encoding="utf-8") as f:
        words = [w.strip() for w in f if w.strip() and not w.startswith("#")]
    text = []
    if not smoke:
        for path in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py"))):
            with open(path, encoding="utf-8", errors="ignore") as f:
                text.append(f.read())
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  min_frequency=12 if smoke else 2, show_progress=False)
    zipf = [" ".join([w] * max(1, 3000 // (r + 1))) for r, w in enumerate(words)]
    tok.train_from_iterator(text + zipf, trainer)
    return tok


def histogram(rows: list[list[int]]) -> str:
    counts = [sum(len(r) == k for r in rows) for k in (1, 2)] + [sum(len(r) >= 3 for r in rows)]
    return f"1 token {counts[0]}, 2 tokens {counts[1]}, 3+ tokens {counts[2]}"


@torch.no_grad()
def lavis_rows(model, prefix, prompt_ids, rows, segment: int) -> torch.Tensor:
    """The LAVIS procedure on token rows: per sample, the candidates in segments of
    `segment`, each a batched forward of [prefix ; prompt ; candidate] with full logits."""
    adapter, out = model.adapter, []
    for i in range(prefix.shape[0]):
        sample = []
        for s in range(0, len(rows), segment):
            part = rows[s:s + segment]
            n = len(part)
            embeds, mask, labels = adapter._sequences(prefix[i:i + 1].expand(n, -1, -1),
                                                      [prompt_ids[i]] * n, part, left=False)
            logits = model.llm(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            target = labels[:, 1:]
            picked = logp.gather(-1, target.clamp(min=0)[..., None]).squeeze(-1)
            sample.append((picked * (target != -100)).sum(-1))
        out.append(torch.cat(sample))
    return torch.stack(out)


@torch.no_grad()
def shared_rows(model, prefix, prompt_ids, rows, chunk: int = 128) -> torch.Tensor:
    flat = model.adapter.score(prefix, prompt_ids, [(i, r) for i in range(prefix.shape[0])
                                                    for r in rows], chunk)
    return flat.view(prefix.shape[0], len(rows))


@torch.no_grad()
def trie_rows(model, prefix, prompt_ids, trie, chunk: int = 256) -> torch.Tensor:
    return torch.stack(model.adapter.score_trie(prefix, prompt_ids, [trie] * prefix.shape[0],
                                                chunk))


def _padded(rows: list[list[int]], size: int, extra: int) -> int:
    """Positions of `rows` run in batches of `size`, each padded to its longest (+ extra)."""
    return sum(len(rows[s:s + size]) * max(0, max(len(r) for r in rows[s:s + size]) + extra)
               for s in range(0, len(rows), size))


def _timed_lavis(model, prefix, prompt_ids, rows):
    """(seconds, scores) of one run of the LAVIS procedure after a one-segment warm-up: at
    tens of seconds a run, one timing is as steady as the best of several."""
    lavis_rows(model, prefix[:1], prompt_ids[:1], rows[:25], 25)
    start = time.perf_counter()
    scores = lavis_rows(model, prefix, prompt_ids, rows, 25)
    return time.perf_counter() - start, scores


def positions(rows: list[list[int]], trie, prompt_len: int) -> dict[str, int]:
    """LLM positions computed per sample by each procedure, padding included, as run here
    (LAVIS: segments of 25, prompt per candidate; shared prefix: the prompt once, then
    chunks of 128 candidates without their last token; trie: the prompt once, then the
    nodes with children and each chunk's context ancestors)."""
    return {"lavis": _padded(rows, 25, prompt_len),
            "shared": prompt_len + _padded(rows, 128, -1),
            "trie": prompt_len + sum(len(c.nodes) for c in trie.chunks(256))}


def run(model, timed_pair, smoke: bool, batch: int, repeats: int, prompt: str):
    """Print the scenario; return (max score difference, vocab speedups vs LAVIS and vs
    shared prefix for append_eos=False)."""
    from lavis_ib.models.llm.trie import CandidateTrie

    n = 200 if smoke else 1000
    bpe = train_bpe(model.llm.config.vocab_size, smoke)
    answers = answer_list(n)
    base = [bpe.encode(a).ids for a in answers]
    g = torch.Generator().manual_seed(1)
    video = torch.randn(batch, 3, 4, 32, 32, generator=g)
    prompts = [prompt] * batch
    prefix = model.encode(video, prompts)
    prompt_ids = model.adapter.tokenize_prompts(prompts)
    plen = prefix.shape[1] + len(prompt_ids[0])
    print(f"vocab: {n} answers ({sum(' ' in a for a in answers)} two-word), BPE of "
          f"{bpe.get_vocab_size()} entries trained in the bench; prompt "
          f"{len(prompt_ids[0])} tokens + {prefix.shape[1]} video soft prompts")
    worst, speedups, slice_n = 0.0, None, n // 10
    for append_eos in (False, True):
        rows = [r + [2] for r in base] if append_eos else base
        trie = CandidateTrie(rows)
        pos = positions(rows, trie, plen)
        t_shared, t_trie, s_shared, s_trie = timed_pair(
            lambda: shared_rows(model, prefix, prompt_ids, rows),
            lambda: trie_rows(model, prefix, prompt_ids, trie), repeats)
        t_lavis, s_lavis = _timed_lavis(model, prefix, prompt_ids, rows[:slice_n])
        t_lavis *= n / slice_n
        diff = max((s_shared - s_trie).abs().max().item(),
                   (s_lavis - s_trie[:, :slice_n]).abs().max().item())
        worst = max(worst, diff)
        print(f"vocab append_eos={append_eos}: {histogram(rows)}; trie {trie.num_nodes} nodes, "
              f"{len(trie.internal)} with children; LLM positions per sample: LAVIS "
              f"{pos['lavis']}, shared prefix {pos['shared']}, trie {pos['trie']} "
              f"(shared/trie {pos['shared'] / pos['trie']:.1f}x, candidate part "
              f"{(pos['shared'] - plen) / max(1, pos['trie'] - plen):.1f}x)")
        print(f"vocab append_eos={append_eos}: LAVIS procedure {t_lavis * 1e3:.0f} ms (timed on "
              f"{slice_n} candidates in segments of 25, x{n // slice_n}), shared prefix "
              f"{t_shared * 1e3:.0f} ms, trie {t_trie * 1e3:.0f} ms, "
              f"max |score diff to trie| {diff:.2e}")
        if not append_eos:
            speedups = (t_lavis / t_trie, t_shared / t_trie)
        else:
            print(f"vocab (append_eos=True) speedup vs LAVIS: {t_lavis / t_trie:.1f}x, "
                  f"vs shared prefix: {t_shared / t_trie:.1f}x")
    print(f"vocab speedup vs LAVIS: {speedups[0]:.1f}x")
    print(f"vocab speedup vs shared prefix: {speedups[1]:.1f}x")
    return worst, speedups

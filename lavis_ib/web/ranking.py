"""The ranking view of the web demo: each candidate's log-probability token by token, its
probability printed so that small values stay readable, a chart whose bars start at zero
(a log-probability is never above it), and the same rows as a CSV file."""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

#: what the chart and the order use: the summed log-probability, or its mean per token
SCORE_KINDS = ("sum", "mean per token")


def probability_text(p: float) -> str:
    """A probability with three significant digits however small it is (0.9996, 0.0312,
    4.56e-07), so that no candidate reads as 0.0% or 100.0% while it is not."""
    if p == 0.0:
        return "0"
    if p >= 1e-3:
        return f"{p:.4f}"
    return f"{p:.2e}"


@dataclass
class Ranking:
    """Candidates best first with their summed log-probabilities (`scores`, what
    `model.score_candidates` returns), tokens scored (EOS included where the model appends
    it), each token's log-probability (`tokens`: (token, log-prob) pairs that sum to the
    score), the probability exp(score) and its share of the mass over the listed candidates
    (softmax of the scores). `kind`: the order, by "sum" or by "mean per token"."""
    candidates: list[str]
    scores: list[float]
    token_counts: list[int] = field(default_factory=list)
    tokens: list[list[tuple[str, float]]] = field(default_factory=list)
    kind: str = "sum"

    @classmethod
    def ordered(cls, candidates: Sequence[str], scores: Sequence[float],
                token_counts: Sequence[int], tokens: Sequence[list[tuple[str, float]]],
                kind: str = "sum") -> "Ranking":
        key = scores if kind == "sum" else [s / max(n, 1) for s, n in zip(scores, token_counts)]
        order = sorted(range(len(candidates)), key=lambda i: -key[i])
        return cls([candidates[i] for i in order], [float(scores[i]) for i in order],
                   [int(token_counts[i]) for i in order], [list(tokens[i]) for i in order],
                   kind)

    @property
    def means(self) -> list[float]:
        """Scores per token (NaN where the tokens are unknown: a model without an adapter)."""
        return [s / n if n else float("nan") for s, n in zip(self.scores, self.token_counts)]

    @property
    def shown(self) -> list[float]:
        """The values the chart draws: the scores, or their means per token."""
        return self.scores if self.kind == "sum" else self.means

    @property
    def probabilities(self) -> list[float]:
        return [math.exp(s) for s in self.scores]

    @property
    def shares(self) -> list[float]:
        if not self.scores:
            return []
        top = max(self.scores)
        weights = [math.exp(s - top) if math.isfinite(s) else 0.0 for s in self.scores]
        total = sum(weights) or 1.0
        return [w / total for w in weights]

    def as_markdown(self) -> str:
        rows = ["| # | candidate | tokens | log-probability | per token | probability | share |",
                "|---:|---|---:|---:|---:|---:|---:|"]
        rows += [f"| {i + 1} | {_escape_cell(c)} | {n} | {s:.4f} | {m:.4f} | "
                 f"{probability_text(p)} | {probability_text(q)} |"
                 for i, (c, n, s, m, p, q) in enumerate(zip(
                     self.candidates, self.token_counts, self.scores, self.means,
                     self.probabilities, self.shares))]
        return "\n".join(rows)

    def tokens_markdown(self) -> str:
        """One line per candidate: each token (as the tokenizer writes it) and its
        log-probability given the image, the prompt and the tokens before it."""
        lines = []
        for cand, toks in zip(self.candidates, self.tokens):
            parts = " · ".join(f"`{_escape_code(t)}` {lp:.4f}" for t, lp in toks) or \
                "(no per-token view: the model does not say how it splits candidates into tokens)"
            lines.append(f"- **{_escape_cell(cand)}**: {parts}")
        return "\n".join(lines)

    def write_csv(self, path: str) -> str:
        """The table with full float precision, one row per candidate (tokens and their
        log-probabilities joined by spaces); returns `path`."""
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["rank", "candidate", "tokens", "log_probability",
                             "log_probability_per_token", "probability", "share",
                             "token_texts", "token_log_probabilities"])
            for i, (c, n, s, m, p, q, toks) in enumerate(zip(
                    self.candidates, self.token_counts, self.scores, self.means,
                    self.probabilities, self.shares, self.tokens)):
                writer.writerow([i + 1, c, n, repr(s), repr(m), repr(p), repr(q),
                                 " ".join(t for t, _ in toks),
                                 " ".join(repr(lp) for _, lp in toks)])
        return path

    def figure(self, title: str = "") -> Any:
        """A horizontal bar chart, best candidate on top, each bar from 0 to its (negative)
        value: the length is the log-probability itself, not its distance to a floor."""
        from matplotlib.figure import Figure   # no pyplot: no global figure, no backend

        values = self.shown
        height = 1.2 + 0.35 * max(1, len(values))
        fig = Figure(figsize=(6.4, height), layout="constrained")
        ax = fig.add_subplot()
        labels = [c if len(c) <= 30 else c[:29] + "…" for c in self.candidates]
        ax.barh(range(len(values)), values, color="#4c72b0")
        ax.set_yticks(range(len(values)), labels)
        ax.invert_yaxis()
        ax.axvline(0.0, color="black", linewidth=1)
        low = min(values) if values else -1.0
        ax.set_xlim(min(low * 1.05, -1e-3), 0.0)
        what = "summed log-probability" if self.kind == "sum" else "log-probability per token"
        ax.set_xlabel(f"{what} (0 = probability 1; bars start at 0)")
        if title:
            ax.set_title(title)
        for y, v in enumerate(values):
            ax.annotate(f"{v:.3f}", (v, y), xytext=(3, 0), textcoords="offset points",
                        va="center", fontsize=8)
        return fig


def _escape_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _escape_code(text: str) -> str:
    return text.replace("`", "'").replace("|", "\\|")


def token_log_probabilities(model: Any, samples: dict, candidates: Sequence[str],
                            append_eos: bool, chunk_size: int = 64
                            ) -> list[list[tuple[str, float]]]:
    """Per candidate, (token, log-probability) of each of its tokens, scored as
    `score_candidates` scores them (same prompt rows, same EOS rule) but through the LLM
    adapter's plain scorer: every prefix of the candidate is scored as a row and the
    per-token values are the differences of these cumulative sums. The last cumulative sum
    is the candidate's score; the tests compare it with `score_candidates` (trie path)."""
    from lavis_ib.models.llm.trie import WHOLE

    adapter = model.adapter
    prompts = model._prompts(samples)
    ids = adapter.tokenize_targets(list(candidates), append_eos=append_eos, limit=WHOLE)
    prefix = model.encode(samples["image"], prompts)
    prompt_rows = model.inference_rows(prompts, prefix.shape[1], max(len(r) for r in ids))
    rows = [(0, row[:k]) for row in ids for k in range(1, len(row) + 1)]
    cumulative = adapter.score(prefix, prompt_rows, rows, chunk_size).float().cpu().tolist()
    out, at = [], 0
    for row in ids:
        sums = cumulative[at:at + len(row)]
        at += len(row)
        steps = [sums[0]] + [b - a for a, b in zip(sums, sums[1:])]
        names = adapter.tokenizer.convert_ids_to_tokens(row)
        out.append(list(zip(names, steps)))
    return out

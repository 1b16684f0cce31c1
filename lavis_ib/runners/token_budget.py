"""Token-budget micro-batches (`run.max_tokens_per_micro_batch`): a rank's share of an
optimizer step, as the mixture loader gave it, regrouped into micro-batches of at most the
budget's LLM positions, every rank running the same number of micro-steps so that no
collective waits on a rank that has finished."""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

from lavis_ib.common.errors import DataError
from lavis_ib.datasets.mixing import merge_batches, num_samples, select_samples
from lavis_ib.runners.batching import padded_positions, token_budget_split

logger = logging.getLogger(__name__)


class TokenBudget:
    """Splits a rank's micro-batches of one step by a token budget.

    `split(batches, step)`: the loader's micro-batches of this rank (the samples the
    mixing unit chose, `batch_size_train` at a time) are concatenated, each sample's tokens
    counted (`count_tokens`: the model's soft prompts + instruction + target), and
    `token_budget_split` groups them longest first under the budget; `agree` turns this
    rank's count into the largest over the ranks (one all-reduce), and every rank splits
    into that many. Which samples a rank holds, and so the global batch, do not change;
    the gradient of the step is the same up to float rounding, because the runner
    normalises by the step's global target-token count, not per micro-batch.

    A sample longer than the budget alone is a micro-batch of one, over the budget: each
    step that has such samples adds one `over_token_budget` event (`pop_events`) and the
    first one logs a WARNING; `over_budget` counts them over the run.

    Args:
        budget: LLM positions per micro-batch (samples x longest sample).
        count_tokens: collated batch -> each sample's token count.
        agree: this rank's number of micro-batches -> the largest over the ranks.
        micro_size: samples the loader asked for per micro-batch (its bookkeeping).
    """

    def __init__(self, budget: int, count_tokens: Callable[[Mapping[str, Any]], list[int]],
                 agree: Callable[[int], int], micro_size: int) -> None:
        self.budget, self.count_tokens, self.agree = int(budget), count_tokens, agree
        self.micro_size = int(micro_size)
        self.over_budget = 0
        self.last_counts: list[int] = []          # this rank's micro-batches: samples each
        self.last_positions: list[int] = []       # and their padded LLM positions
        self._events: list[dict[str, Any]] = []

    def split(self, batches: Sequence[Mapping[str, Any]], step: int) -> list[dict[str, Any]]:
        """This rank's micro-batches of optimizer step `step` (1-based, for the events).

        Raises:
            DataError: the token counts do not match the batch's samples.
        """
        merged = merge_batches(list(batches), [self.micro_size] * len(batches))
        n = num_samples(merged)
        counts = [int(c) for c in self.count_tokens(merged)] if n else []
        if len(counts) != n:
            raise DataError(f"the model counted tokens for {len(counts)} samples of a batch of "
                            f"{n}; its sample_token_counts must give one count per sample.")
        parts = self.agree(len(token_budget_split(counts, self.budget)))
        if parts <= n:
            groups = token_budget_split(counts, self.budget, parts)
        else:  # unreadable samples left fewer than the other ranks' micro-steps
            groups = token_budget_split(counts, self.budget, n) + [[]] * (parts - n)
        over = [c for c in counts if c > self.budget]
        if over:
            self._note_over_budget(over, step)
        self.last_counts = [len(g) for g in groups]
        self.last_positions = [padded_positions(counts, g) for g in groups]
        return [select_samples(merged, g) for g in groups]

    def _note_over_budget(self, over: list[int], step: int) -> None:
        if not self.over_budget:
            logger.warning("a %d-token sample is longer than run.max_tokens_per_micro_batch = %d: "
                           "it runs alone, over the budget; such samples are counted in the "
                           "over_token_budget events of log.jsonl", max(over), self.budget)
        self.over_budget += len(over)
        self._events.append({"event": "over_token_budget", "step": step, "samples": len(over),
                             "longest": max(over), "budget": self.budget,
                             "total": self.over_budget})

    def pop_events(self) -> list[dict[str, Any]]:
        """`over_token_budget` events since the last call, for the run's log.jsonl."""
        events, self._events = self._events, []
        return events

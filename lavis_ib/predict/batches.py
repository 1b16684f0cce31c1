"""Batches of `lavis-ib predict` records and what the model makes of one batch.

Batches never mix images with videos or generation with ranking, so they, and the per-batch
seeds, depend only on the inputs, `--batch-size` and the length grouping (`make_windows`:
inputs of similar prompt length share a batch, results are written in input order)."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

from lavis_ib.common.errors import DataError
from lavis_ib.predict.inputs import PredictRecord

log = logging.getLogger(__name__)


def make_batches(records: Sequence[PredictRecord], batch_size: int) -> list[range]:
    """Index ranges of the batches, in input order.

    A batch holds consecutive records of one kind (images, or videos, whose tensors have
    another shape) and one mode (generation, or ranking, where every record may carry its
    own candidate list); it never crosses a change of kind or mode, so the batches, and
    with them the per-batch seeds, depend only on the inputs and `batch_size`.
    """
    batches: list[range] = []
    start = 0
    for i in range(1, len(records) + 1):
        full = i - start == batch_size
        changed = i < len(records) and _group(records[i]) != _group(records[start])
        if i == len(records) or full or changed:
            batches.append(range(start, i))
            start = i
    return batches


def _group(record: PredictRecord) -> tuple[str, bool]:
    return record.kind, record.candidates is None


#: batches of inputs per window of length grouping: a larger window groups better, a kill
#: loses more (a window's results are written together)
WINDOW_BATCHES = 8


@dataclasses.dataclass(frozen=True)
class Window:
    """Consecutive inputs `start` to `stop` (a range's bounds, so a resume counts them as
    it counts batches), predicted in `batches` (lists of input indices) and written
    together, in input order, when the last of them is done."""

    start: int
    stop: int
    batches: tuple[tuple[int, ...], ...]


def make_windows(records: Sequence[PredictRecord], batch_size: int,
                 length_grouped: bool = True) -> list[Window]:
    """The windows of a run. Without `length_grouped`, one window per batch of
    `make_batches` (consecutive inputs). With it, each window holds `WINDOW_BATCHES`
    batches' worth of consecutive inputs; within a window the inputs of one kind and mode
    are sorted by prompt length (characters, longest first, input order among equals) and
    cut into batches, so a batch pads its prompts to a length close to each of theirs.
    Either way the windows depend only on the inputs and `batch_size`."""
    if not length_grouped:
        return [Window(b.start, b.stop, (tuple(b),)) for b in make_batches(records, batch_size)]
    windows, size = [], batch_size * WINDOW_BATCHES
    for start in range(0, len(records), size):
        span = range(start, min(start + size, len(records)))
        groups: dict[tuple[str, bool], list[int]] = {}
        for i in span:
            groups.setdefault(_group(records[i]), []).append(i)
        batches = []
        for members in groups.values():
            members.sort(key=lambda i: (-len(records[i].prompt), i))
            batches += [tuple(members[k:k + batch_size])
                        for k in range(0, len(members), batch_size)]
        windows.append(Window(span.start, span.stop, tuple(batches)))
    return windows


def identity(record: PredictRecord) -> dict[str, Any]:
    """The fields a result record repeats from its input (checked on resume)."""
    out: dict[str, Any] = {"input": record.name, "prompt": record.prompt}
    if record.candidates is not None:
        out["candidates"] = list(record.candidates)
    return out


def load_media(records: Sequence[PredictRecord], processor: Any):
    """(tensors of the readable records, {index: reason} of the unreadable ones). Run in
    a reader thread one batch ahead, so decoding overlaps the model's work."""
    from lavis_ib.processors.media_files import load_image, load_video

    tensors, skipped = {}, {}
    for i, record in enumerate(records):
        try:
            load = load_video if record.kind == "video" else load_image
            tensors[i] = load(record.path, processor)
        except DataError as exc:
            skipped[i] = str(exc).rstrip(".")
            log.warning("skipped (%s)", skipped[i])
    return tensors, skipped


def predict_batch(model: Any, records: Sequence[PredictRecord], media: tuple[dict, dict],
                  generate: dict[str, Any], append_eos: bool | None) -> list[dict[str, Any]]:
    """One result record per input record, in order: `answer` (generation), `scores` /
    `ranking` / `answer` (ranking) or `skipped` with the reason; `media` is what
    `load_media` read for `records`."""
    import torch

    tensors, skipped = media
    results: list[dict[str, Any]] = [{**identity(r), "skipped": skipped[i]} if i in skipped
                                     else identity(r) for i, r in enumerate(records)]
    ready = [i for i in range(len(records)) if i in tensors]
    if not ready:
        return results
    samples = {"image": torch.stack([tensors[i] for i in ready]).to(model.device),
               "prompt": [records[i].prompt for i in ready]}
    if records[0].candidates is None:
        for i, answer in zip(ready, model.generate(samples, **generate)):
            results[i]["answer"] = answer
        return results
    shared: dict[tuple, list[str]] = {}   # one list object per distinct candidate list:
    lists = [shared.setdefault(records[i].candidates, list(records[i].candidates))
             for i in ready]              # the model tokenises a shared list once
    scores, _ = model.score_candidates(samples, lists, append_eos=append_eos)
    for row, i in enumerate(ready):
        labels = lists[row]
        values = [float(v) for v in scores[row, :len(labels)].tolist()]
        ranking = [labels[j] for j in sorted(range(len(labels)), key=lambda j: -values[j])]
        results[i].update(scores=dict(zip(labels, values)), ranking=ranking, answer=ranking[0])
    return results


def print_results(results: Sequence[dict[str, Any]]) -> None:
    """The terminal form: `input<TAB>answer` per generation; per ranking the input, then
    each candidate with its summed log-probability, best first. Skipped inputs are only
    logged (stderr), so stdout holds answers alone."""
    for result in results:
        if "skipped" in result:
            continue
        if "scores" not in result:
            print(f"{result['input']}\t{result['answer']}", flush=True)
            continue
        print(result["input"])
        for label in result["ranking"]:
            print(f"  {result['scores'][label]:10.4f}  {label}")
        print(end="", flush=True)

"""Caption metrics through pycocoevalcap: PTB tokenisation, BLEU-4, METEOR, CIDEr (SPICE).

The official COCO caption code computes the numbers papers report, so it is used rather
than reimplemented; pycocoevalcap is imported here only, when metrics are computed."""
from __future__ import annotations

from typing import Hashable, Mapping, Sequence

from lavis_ib.common.errors import DataError


def caption_scores(predictions: Mapping[Hashable, str],
                   references: Mapping[Hashable, Sequence[str]],
                   spice: bool = False, meteor: bool = True) -> dict[str, float]:
    """Corpus-level caption scores in percent.

    The COCO caption evaluation protocol: references and predictions both go through the
    Stanford PTB tokenizer (Java) with punctuation removed, then each scorer runs on the
    tokenised text. Scores are reported x100 (CIDEr 119.9 as in Table 1).

    Args:
        predictions: id -> the generated caption.
        references: id -> the ground-truth captions (same ids).
        spice: also compute SPICE (slow; needs Java and its Stanford models).
        meteor: compute METEOR (a Java process that takes seconds to start; frequent
            validation during training may leave it out).

    Returns:
        ``{"bleu4", "cider"[, "meteor"][, "spice"]}``.

    Raises:
        DataError: ids differ between predictions and references, or an id has no
            reference.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if set(predictions) != set(references):
        missing = sorted(map(str, set(references) ^ set(predictions)))[:5]
        raise DataError(f"caption metrics: predictions and references cover different ids "
                        f"(e.g. {', '.join(missing)}).")
    empty = [k for k, refs in references.items() if not refs]
    if empty:
        raise DataError(f"caption metrics: id {empty[0]!r} has no reference caption.")
    from lavis_ib.common.quiet import PTB_SPEED_LINE, child_stderr_without

    tokenizer = PTBTokenizer()
    with child_stderr_without(PTB_SPEED_LINE):   # the Java tokenizer's speed report
        gts = tokenizer.tokenize({k: [{"caption": str(r)} for r in references[k]]
                                  for k in references})
        res = tokenizer.tokenize({k: [{"caption": str(predictions[k])}] for k in references})
    # the tokenizer drops trailing empty lines: an empty prediction comes back missing
    res = {k: res.get(k) or [""] for k in references}

    scores: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores["bleu4"] = 100.0 * float(bleu[3])
    if meteor:
        scorer = Meteor()  # a Java subprocess, stopped by its __del__ when released below
        scores["meteor"] = 100.0 * float(scorer.compute_score(gts, res)[0])
        del scorer
    scores["cider"] = 100.0 * float(Cider().compute_score(gts, res)[0])
    if spice:
        from pycocoevalcap.spice.spice import Spice

        scores["spice"] = 100.0 * float(Spice().compute_score(gts, res)[0])
    return scores


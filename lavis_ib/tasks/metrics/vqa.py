"""VQA answer normalisation and accuracies (our implementation of the published rules).

Scores comparable with published ones need the official normalisation, quirks included, so
each rule here follows the official script or scorer (steps: `normalize_answer`,
`vqa_accuracy`; A-OKVQA: `aokvqa_accuracy`; iVQA and exact match below them)."""
from __future__ import annotations

import re
from typing import Callable, Sequence

from lavis_ib.tasks.metrics.vqa_tables import (ARTICLES, CONTRACTIONS, NUMBER_WORDS, PERIOD_STRIP_COUNT,
                                       PUNCTUATION)

_COMMA_BETWEEN_DIGITS = re.compile(r"\d,\d")
_PERIOD_NOT_DECIMAL = re.compile(r"\.(?!\d)")
_ARTICLES = frozenset(ARTICLES)


def clean_whitespace(text: str) -> str:
    return str(text).replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """Step 2 of the official normalisation (punctuation and periods)."""
    out = text
    has_digit_comma = _COMMA_BETWEEN_DIGITS.search(text) is not None
    for p in PUNCTUATION:
        # the test reads the original text, the replacement the running result (official)
        if p + " " in text or " " + p in text or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_NOT_DECIMAL.sub("", out, count=PERIOD_STRIP_COUNT)


def process_digit_article(text: str) -> str:
    """Step 3: lower-case, number words -> digits, drop articles, restore contractions."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def normalize_answer(text: str) -> str:
    """The full official normalisation of one answer (steps 1-3).

    The official VQAv2 evaluation (Antol et al.; the GT-Vision-Lab evaluation script, also
    run by the EvalAI server and LAVIS):

    1. whitespace: newlines and tabs become spaces, the ends are stripped;
    2. punctuation: each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted when it
       touches a space or the answer contains a digit-comma-digit ("1,000"), else replaced
       by a space; a period not followed by a digit is deleted ("3.5" keeps its point), at
       most 32 per answer;
    3. digits and articles: lower-case, number words zero..ten (and "none") become digits,
       the articles a/an/the are dropped, and words in the official contraction table are
       replaced ("dont" -> "don't"); the tables are in `vqa_tables`, transcribed as published.
    """
    return process_digit_article(process_punctuation(clean_whitespace(text)))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Official VQAv2 accuracy of one prediction (mean over leave-one-out subsets).

    Step 4 of the official evaluation: for each of the 10 leave-one-out subsets of 9 human
    answers, min(1, #matches / 3); the mean of the 10 values. As in the official script,
    the prediction always goes through steps 1-3 (`normalize_answer`) while the human
    answers (already normalised in the official annotation files) only get step 2, and only
    when they disagree with each other.
    """
    if not answers:
        raise ValueError("vqa_accuracy needs at least one human answer")
    pred = normalize_answer(prediction)
    gts = [str(a) for a in answers]
    if len(set(gts)) > 1:
        gts = [process_punctuation(a) for a in gts]
    accs = []
    for i in range(len(gts)):
        matches = sum(1 for j, gt in enumerate(gts) if j != i and gt == pred)
        accs.append(min(1.0, matches / 3.0))
    return sum(accs) / len(accs)


def _capped(divisor: float) -> Callable[[str, Sequence[str]], float]:
    def accuracy(prediction: str, answers: Sequence[str]) -> float:
        pred = normalize_answer(prediction)
        matches = sum(1 for a in answers if normalize_answer(a) == pred)
        return min(1.0, matches / divisor)
    return accuracy


# iVQA: min(1, #matches / 2) over its 5 answers, after the normalisation on each side.
ivqa_accuracy = _capped(2.0)


def aokvqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """A-OKVQA direct answer: min(1, #(prediction == answer) / 3) on the raw strings, as
    both LAVIS and the A-OKVQA authors' scorer do (no normalisation: "a dog" is not "dog");
    `aokvqa_official` gives A-OKVQA's two published numbers."""
    return min(1.0, sum(1 for a in answers if prediction == a) / 3.0)


# allenai/aokvqa evaluation/eval_predictions.py at commit 42e8c44 (2022-08-11, its latest):
# direct-answer accuracy leaves out the questions marked difficult_direct_answer; earlier
# versions of the script kept every question, as LAVIS does.
AOKVQA_SCORER_COMMIT = "42e8c44ff40d13cf272776a3197365f582137772"


def aokvqa_official(predictions: Sequence[str], answers: Sequence[Sequence[str]],
                    difficult: Sequence[bool | None]) -> dict[str, float]:
    """A-OKVQA direct answer in percent: ``acc`` over every question (LAVIS's rule) and
    ``acc_official`` over the questions the authors' scorer keeps (not difficult)."""
    scores = [aokvqa_accuracy(p, a) for p, a in zip(predictions, answers)]
    kept = [s for s, d in zip(scores, difficult) if not d]
    out = {"acc": 100.0 * sum(scores) / len(scores)}
    if kept:
        out["acc_official"] = 100.0 * sum(kept) / len(kept)
    return out


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1 if the prediction equals any answer (GQA, MSVD-QA, MSRVTT-QA, OCR-VQA), after the
    normalisation on each side."""
    pred = normalize_answer(prediction)
    return float(any(normalize_answer(a) == pred for a in answers))


ACCURACIES: dict[str, Callable[[str, Sequence[str]], float]] = {
    "vqa": vqa_accuracy, "aokvqa": aokvqa_accuracy, "ivqa": ivqa_accuracy,
    "exact": exact_match,
}


def mean_accuracy(metric: str, predictions: Sequence[str],
                  answers: Sequence[Sequence[str]]) -> float:
    """Mean accuracy in percent (0-100) of `predictions` under `metric`."""
    fn = ACCURACIES[metric]
    if not predictions:
        raise ValueError("no predictions")
    return 100.0 * sum(fn(p, a) for p, a in zip(predictions, answers)) / len(predictions)

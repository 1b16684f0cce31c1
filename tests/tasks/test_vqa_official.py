"""VQAv2 accuracy equals an independent transcription of the official script.

A seeded fuzz corpus of 6,000 (prediction, 10 answers) cases built from case changes,
punctuation, number words, articles, contractions and whitespace, plus every key of the
contraction table on its own, is scored by `vqa_accuracy` and by `vqa_reference`
(written from the script, not from our code).
"""
import random

import pytest

from lavis_ib.tasks.metrics.vqa import normalize_answer, vqa_accuracy
from lavis_ib.tasks.metrics.vqa_tables import CONTRACTIONS, NUMBER_WORDS, PUNCTUATION

from vqa_reference import process_digit_article, process_punctuation, question_accuracy

WORDS = ["dog", "cat", "red", "yes", "no", "table", "2", "3.5", "1,000", "shed", "lets",
         "shes", "its", "well", "somebody'd", "let's", "she's", "hes", "o'clock", "ow's'at"]
VARIANTS = list(CONTRACTIONS) + list(CONTRACTIONS.values()) + list(NUMBER_WORDS)


def _noisy(rng, text):
    """One answer-like string: words with case, punctuation, article and spacing noise."""
    out = []
    for word in text.split():
        r = rng.random()
        if r < 0.15:
            word = word.upper()
        elif r < 0.3:
            word = word.capitalize()
        if rng.random() < 0.25:
            word = rng.choice(["a ", "an ", "the ", "The "]) + word
        if rng.random() < 0.3:
            p = rng.choice(PUNCTUATION + (".", ". ", " .", "..."))
            word = word + p if rng.random() < 0.5 else p + word
        out.append(word)
    sep = rng.choice([" ", "  ", "\t", " \n"])
    text = sep.join(out)
    if rng.random() < 0.2:
        text = rng.choice([" ", "\n", "\t", "  "]) + text + rng.choice(["", " ", "\n"])
    return text


def _base(rng):
    pool = WORDS + VARIANTS
    return " ".join(rng.choice(pool) for _ in range(rng.choice([1, 1, 1, 2, 3])))


def corpus(n=6000, seed=1234):
    rng = random.Random(seed)
    cases = []
    for _ in range(n):
        bases = [_base(rng) for _ in range(rng.choice([1, 2, 3]))]
        answers = [_noisy(rng, rng.choice(bases)) if rng.random() < 0.5 else rng.choice(bases)
                   for _ in range(10)]
        prediction = _noisy(rng, rng.choice(bases + [_base(rng)]))
        cases.append((prediction, answers))
    return cases


def test_fuzz_corpus_equals_the_official_script():
    cases = corpus()
    assert len(cases) >= 5000
    mismatches = [(p, a, vqa_accuracy(p, a), question_accuracy(p, a)) for p, a in cases
                  if vqa_accuracy(p, a) != pytest.approx(question_accuracy(p, a), abs=1e-12)]
    assert not mismatches, mismatches[:5]
    scores = {round(question_accuracy(p, a), 6) for p, a in cases}
    assert scores == {0.0, 0.3, 0.6, 0.9, 1.0}   # every level of credit occurs


@pytest.mark.parametrize("key", sorted(CONTRACTIONS))
def test_every_contraction_key_on_its_own(key):
    for answers in ([key] * 10, [CONTRACTIONS[key]] * 10, [key] * 4 + ["x"] * 6):
        assert vqa_accuracy(key, answers) == question_accuracy(key, answers)


def test_the_official_quirks():
    # published table entries, not a rule: these stay as they are ...
    for word in ("shed", "lets", "shes", "somebodyd"):
        assert word not in CONTRACTIONS and normalize_answer(word) == word
    assert vqa_accuracy("shed", ["shed"] * 10) == 1.0
    # ... and these map as the table says (reversed for somebody'd)
    assert normalize_answer("somebody'd") == "somebodyd"
    assert normalize_answer("let's") == "let's"
    assert normalize_answer("ow's'at") == "'ow's'at"
    # the period strip stops after 32 periods
    assert normalize_answer("." * 40) == "." * 8
    assert normalize_answer("." * 40) == process_digit_article(process_punctuation("." * 40))

"""Our own transcription of the official VQA evaluation's per-question accuracy.

It follows `VQAEval.evaluate` / `processPunctuation` / `processDigitArticle` of the
official script (as carried in LAVIS, `lavis/common/vqa_tools/vqa_eval.py`) statement by
statement, including its answer records (dicts with distinct `answer_id`s, compared as
whole dicts for the leave-one-out), its punctuation test on the original text, and
`re.sub`'s count receiving `re.UNICODE`. It reuses only the transcribed tables, so the
differential test checks our normalisation code against an independent reading of the
script.
"""
import re

from lavis_ib.tasks.metrics.vqa_tables import ARTICLES, CONTRACTIONS, NUMBER_WORDS, PUNCTUATION

PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")   # the script's pattern, verbatim semantics
COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def process_punctuation(in_text):
    out_text = in_text
    for p in PUNCTUATION:
        if (p + " " in in_text or " " + p in in_text) or COMMA_STRIP.search(in_text) is not None:
            out_text = out_text.replace(p, "")
        else:
            out_text = out_text.replace(p, " ")
    return PERIOD_STRIP.sub("", out_text, re.UNICODE)


def process_digit_article(in_text):
    number_map = dict(NUMBER_WORDS)
    words = []
    for word in in_text.lower().split():
        word = number_map.setdefault(word, word)
        if word not in ARTICLES:
            words.append(word)
    for i, word in enumerate(words):
        if word in CONTRACTIONS:
            words[i] = CONTRACTIONS[word]
    return " ".join(words)


def question_accuracy(prediction, answer_texts):
    """The script's avgGTAcc for one question (0..1)."""
    answers = [{"answer": a, "answer_id": i + 1} for i, a in enumerate(answer_texts)]
    res = prediction.replace("\n", " ").replace("\t", " ").strip()
    res = process_digit_article(process_punctuation(res))
    if len(set(a["answer"] for a in answers)) > 1:
        for a in answers:
            a["answer"] = process_punctuation(a["answer"])
    accs = []
    for held_out in answers:
        others = [a for a in answers if a != held_out]
        matching = [a for a in others if a["answer"] == res]
        accs.append(min(1, float(len(matching)) / 3))
    return float(sum(accs)) / len(accs)

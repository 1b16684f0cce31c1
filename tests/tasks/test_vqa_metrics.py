"""VQA accuracy: every normalisation rule and the leave-one-out average."""
import pytest

from lavis_ib.tasks.metrics.vqa import (CONTRACTIONS, aokvqa_accuracy, exact_match,
                                        ivqa_accuracy, mean_accuracy, normalize_answer,
                                        process_digit_article, process_punctuation,
                                        vqa_accuracy)


@pytest.mark.parametrize("raw, expected", [
    ("Yes", "yes"),                        # lower-case
    ("  red\tcar\n", "red car"),           # whitespace
    ("two", "2"), ("None", "0"), ("ten dogs", "10 dogs"),   # number words
    ("eleven", "eleven"),                  # only zero..ten (and none) are mapped
    ("a dog", "dog"), ("The Cat", "cat"), ("an apple", "apple"),   # articles
    ("dont", "don't"), ("cant", "can't"), ("couldnt've", "couldn't've"),   # contractions
    ("couldn'tve", "couldn't've"), ("yall'd've", "y'all'd've"),
    ("its", "its"), ("well", "well"),      # ordinary words are not contractions
    ("yes.", "yes"), ("3.5", "3.5"), ("end. ", "end"),  # periods (decimal point kept)
    ("black-and-white", "black and white"),   # punctuation without space -> space
    ("black - white", "black white"),       # punctuation touching a space -> removed
    ("1,000", "1000"),                      # digit,digit -> all punctuation removed
    ("red,blue", "red blue"),
    ("what?!", "what"),                     # '?' and '!' at the end: replaced by spaces, stripped
    ("(hi)", "hi"), ("a/b", "b"),           # "a/b" -> "a b" -> article dropped
    ("the two dogs.", "2 dogs"),
])
def test_normalisation_rules(raw, expected):
    assert normalize_answer(raw) == expected


def test_punctuation_rule_reads_the_original_text():
    # '-' touches a space in the original, so every '-' is deleted, even inside words
    assert process_punctuation("x - y-z") == "x  yz"
    # no digit-comma-digit and no space around ',' -> replaced by a space
    assert process_punctuation("a,b") == "a b"
    assert process_digit_article("A An THE one") == "1"


def test_contraction_table_variants():
    assert CONTRACTIONS["wouldnt've"] == "wouldn't've"
    assert CONTRACTIONS["wouldn'tve"] == "wouldn't've"
    assert "wouldntve" not in CONTRACTIONS   # only one apostrophe missing is restored
    for word in ("its", "well", "were", "id", "im", "ill", "shell", "hell"):
        assert word not in CONTRACTIONS


def test_leave_one_out_average():
    # 10 answers, "cat" given by k of them: acc = mean over 10 leave-one-out subsets
    def answers(k):
        return ["cat"] * k + ["dog"] * (10 - k)
    assert vqa_accuracy("cat", answers(0)) == 0.0
    # k=1: 9 subsets keep the one "cat" (1/3), one subset drops it (0) -> 9/10 * 1/3
    assert vqa_accuracy("cat", answers(1)) == pytest.approx(0.9 / 3)
    # k=2: 8 subsets with 2 matches (2/3), 2 subsets with 1 (1/3) -> (16/3 + 2/3)/10
    assert vqa_accuracy("cat", answers(2)) == pytest.approx(0.6)
    # k=3: 7 subsets with 3 (1), 3 subsets with 2 (2/3) -> (7 + 2)/10
    assert vqa_accuracy("cat", answers(3)) == pytest.approx(0.9)
    assert vqa_accuracy("cat", answers(4)) == 1.0
    assert vqa_accuracy("Cat.", answers(4)) == 1.0   # the prediction is normalised


def test_official_answer_processing_only_when_answers_disagree():
    # answers that disagree get their punctuation processed: "cat." matches "cat"
    assert vqa_accuracy("cat", ["cat."] * 4 + ["dog"] * 6) == 1.0
    # unanimous answers are used as given (official annotations are normalised already)
    assert vqa_accuracy("cat", ["cat."] * 10) == 0.0
    assert vqa_accuracy("2", ["2"] * 10) == 1.0
    assert vqa_accuracy("two", ["2"] * 10) == 1.0


def test_other_accuracies():
    # A-OKVQA compares raw strings (its authors' scorer and LAVIS): no number-word mapping
    assert aokvqa_accuracy("2", ["2", "2", "3"]) == pytest.approx(2 / 3)
    assert aokvqa_accuracy("two", ["2", "2", "3"]) == 0.0
    assert aokvqa_accuracy("2", ["2"] * 5) == 1.0
    assert ivqa_accuracy("a dog", ["dog", "puppy", "puppy", "cat", "cat"]) == 0.5
    assert ivqa_accuracy("dog", ["dog", "dog", "x", "y", "z"]) == 1.0
    assert exact_match("The Table.", ["table"]) == 1.0
    assert exact_match("chair", ["table"]) == 0.0
    assert mean_accuracy("exact", ["a", "b"], [["a"], ["c"]]) == 50.0


def test_empty_answers_rejected():
    with pytest.raises(ValueError):
        vqa_accuracy("x", [])


PUNCT = list(';/[]"{}()=+\\_->' + "<@`,?!")


@pytest.mark.parametrize("p", PUNCT)
def test_every_punctuation_mark(p):
    assert normalize_answer(f"x{p}y") == "x y"          # inside a word: becomes a space
    assert process_punctuation(f"x {p}y") == "x y"      # touching a space: deleted
    assert normalize_answer(f"1,0{p}0") == "100"        # digit,digit in the answer: deleted


@pytest.mark.parametrize("word, digit", [("none", "0"), ("zero", "0"), ("one", "1"),
                                         ("two", "2"), ("three", "3"), ("four", "4"),
                                         ("five", "5"), ("six", "6"), ("seven", "7"),
                                         ("eight", "8"), ("nine", "9"), ("ten", "10")])
def test_every_number_word(word, digit):
    assert normalize_answer(word.upper()) == digit

"""Caption metrics equal pycocoevalcap called directly on the same data."""
import pytest

from lavis_ib.common.errors import DataError
from lavis_ib.tasks.metrics.caption import caption_scores

REFS = {
    "1": ["A man riding a wave on top of a surfboard.", "A surfer rides a large wave.",
          "A person surfing in the ocean."],
    "2": ["Two dogs play in the grass.", "A pair of dogs running on a lawn."],
    "3": ["A plate of food with broccoli and rice.", "Dinner: rice, broccoli, chicken!"],
}
PREDS = {"1": "a man surfing a wave", "2": "two dogs running on the grass",
         "3": "a plate with rice and broccoli"}


@pytest.fixture(scope="module")
def ours():
    return caption_scores(PREDS, REFS)


def test_equals_pycocoevalcap_direct(ours):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in REFS.items()})
    res = tok.tokenize({k: [{"caption": v}] for k, v in PREDS.items()})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    meteor, _ = Meteor().compute_score(gts, res)
    assert ours["bleu4"] == pytest.approx(100 * bleu[3], abs=1e-9)
    assert ours["cider"] == pytest.approx(100 * cider, abs=1e-9)
    assert ours["meteor"] == pytest.approx(100 * meteor, abs=1e-9)
    assert ours["cider"] > 0 and set(ours) == {"bleu4", "meteor", "cider"}


def test_without_meteor_the_other_scores_are_unchanged(ours):
    fast = caption_scores(PREDS, REFS, meteor=False)
    assert set(fast) == {"bleu4", "cider"}
    assert fast["cider"] == ours["cider"] and fast["bleu4"] == ours["bleu4"]


def test_mismatched_ids_and_empty_references():
    with pytest.raises(DataError, match="different ids"):
        caption_scores({"1": "x"}, {"2": ["y"]})
    with pytest.raises(DataError, match="no reference"):
        caption_scores({"1": "x"}, {"1": []})

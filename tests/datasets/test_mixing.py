"""Balanced mixing: weights, the per-step dataset choice, and the per-dataset index streams."""
import math

import numpy as np
import pytest

import torch

from lavis_ib.common.errors import ConfigError, DataError
from lavis_ib.datasets.mixing import IndexStream, Mixer, MixPlan, merge_batches, mixing_weights

SIZES = {"coco_caption": 40000, "ok_vqa": 900, "aok_vqa": 1700, "textcaps": 10000}
RATIOS = {"ok_vqa": 2.0, "aok_vqa": 0.5}  # the shipped projects' sample_ratio


def test_shipped_ratios_follow_the_paper():
    # A-OKVQA down, OKVQA up (Sec. 2.4); everything else keeps the plain sqrt weighting.
    import glob

    from lavis_ib.common.config import Config
    from lavis_ib.common.paths import package_path

    projects = glob.glob(package_path("configs/projects/instructblip/instruction_tuning_*.yaml"))
    assert projects
    for path in projects:
        datasets = Config(path).datasets_cfg
        ratios = {n: float(d.get("sample_ratio", 1.0)) for n, d in datasets.items()}
        assert ratios["aok_vqa"] == RATIOS["aok_vqa"] < 1.0 < ratios["ok_vqa"] == RATIOS["ok_vqa"]
        assert all(r == 1.0 for n, r in ratios.items() if n not in RATIOS), path


@pytest.mark.parametrize("balanced", [True, False])
def test_weights_match_formula(balanced):
    probs = mixing_weights(SIZES, RATIOS, balanced)
    raw = {n: (math.sqrt(s) if balanced else s) * RATIOS.get(n, 1.0) for n, s in SIZES.items()}
    total = sum(raw.values())
    assert list(probs) == sorted(SIZES)
    for name in SIZES:
        assert probs[name] == pytest.approx(raw[name] / total)
    assert sum(probs.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("balanced", [True, False])
def test_proportions_over_20000_draws(balanced):
    mixer = Mixer(SIZES, RATIOS, balanced=balanced, seed=7)
    draws = [mixer.choose(s) for s in range(20000)]
    for name, p in mixer.probabilities.items():
        assert abs(draws.count(name) / len(draws) - p) < 0.02, (name, draws.count(name), p)
    # the two settings really differ (sqrt flattens the sizes)
    assert mixer.probabilities["ok_vqa"] != pytest.approx(
        mixing_weights(SIZES, RATIOS, not balanced)["ok_vqa"])


@pytest.mark.parametrize("unit, global_bs, group", [("micro_batch", 192, 12), ("sample", 16, 1)])
def test_plan_shares_over_20000_draws(unit, global_bs, group):
    # 20,000 draws: 1,250 steps of 16 groups of 12 slots (the authors' 16 x 12 layout), or
    # 1,250 steps of 16 single-slot draws; each share within 1 point of its probability
    plan = MixPlan(Mixer(SIZES, RATIOS, seed=7), global_bs, unit, group)
    draws = [names[j] for s in range(1250) for names in [plan.slot_names(s)] for j in range(0, global_bs, group)]
    assert len(draws) == 20000
    for name, p in plan.mixer.probabilities.items():
        assert abs(draws.count(name) / len(draws) - p) < 0.01, (name, draws.count(name), p)


def test_plan_groups_and_units():
    mixer = Mixer(SIZES, RATIOS, seed=3)
    micro, sample = MixPlan(mixer, 12, "micro_batch", 4), MixPlan(mixer, 12, "sample")
    for s in range(50):
        names = micro.slot_names(s)
        assert [names[j] for j in (0, 4, 8)] == mixer.draws(s, 3)         # draw g fills group g
        assert all(names[j] == names[j - j % 4] for j in range(12))       # one dataset per group
        assert sample.slot_names(s) == mixer.draws(s, 12)
        assert MixPlan(mixer, 12, "step").slot_names(s) == [mixer.choose(s)] * 12
        assert mixer.draws(s, 5) == mixer.draws(s, 40)[:5]                # draw k ignores the count
    ragged = MixPlan(mixer, 10, "micro_batch", 4).slot_names(9)          # last group partial
    assert ragged == micro.slot_names(9)[:10]
    assert sum(len(set(micro.slot_names(s))) > 1 for s in range(50)) > 25  # steps do mix


def test_plan_takes_each_dataset_stream_in_slot_order():
    plan = MixPlan(Mixer({"a": 5, "b": 7}, seed=1), 6, "sample")
    streams = {"a": IndexStream("a", 5, 1)}               # "b" has no stream (iterable)
    taken = [plan.take(s, streams) for s in range(20)]
    a = [i for step in taken for n, i in step if n == "a"]
    assert a == IndexStream("a", 5, 1).take(len(a))
    assert all(i is None for step in taken for n, i in step if n == "b")
    replayed = {"a": IndexStream("a", 5, 1)}
    for s in range(20):
        plan.advance(s, replayed)
    assert replayed["a"].state_dict() == streams["a"].state_dict()


def test_bad_plan_settings():
    mixer = Mixer({"a": 1})
    with pytest.raises(ConfigError, match="run.mix_unit: 'batch' is not one of micro_batch, sample, step"):
        MixPlan(mixer, 4, "batch")
    with pytest.raises(ConfigError, match="batch_size_train"):
        MixPlan(mixer, 4, "micro_batch", 0)


def test_merge_batches_concatenates_parts_in_order():
    a = {"image": torch.zeros(2, 3), "text_input": ["x", "y"], "_bad_files": ["/a.jpg"], "_num_requested": 3}
    b = {"image": torch.ones(1, 3), "text_input": ["z"]}                  # a collater without counts
    empty = {"_bad_files": ["/c.jpg"], "_bad_reasons": ["missing"], "_num_requested": 1}
    merged = merge_batches([a, b, empty], [3, 1, 1])
    assert merged["image"].tolist() == [[0.0] * 3] * 2 + [[1.0] * 3]
    assert merged["text_input"] == ["x", "y", "z"] and merged["_num_requested"] == 5
    assert merged["_bad_files"] == ["/a.jpg", "/c.jpg"] and merged["_bad_reasons"] == ["missing"]
    assert merge_batches([a], [3]) == a
    with pytest.raises(DataError, match="differ in field 'text_input'"):
        merge_batches([a, {"image": torch.ones(1, 3)}], [3, 1])
    with pytest.raises(DataError, match="'image' tensors have different shapes"):
        merge_batches([a, {"image": torch.ones(1, 4), "text_input": ["z"]}], [3, 1])


def test_choice_depends_on_seed_and_step_only():
    a = Mixer(SIZES, RATIOS, seed=3)
    b = Mixer(dict(reversed(list(SIZES.items()))), RATIOS, seed=3)  # dict order is irrelevant
    steps = [5, 0, 999, 3, 5]                                     # any order, repeats
    assert [a.choose(s) for s in steps] == [b.choose(s) for s in steps]
    assert a.choose(5) == a.choose(5)
    other = Mixer(SIZES, RATIOS, seed=4)
    assert [a.choose(s) for s in range(200)] != [other.choose(s) for s in range(200)]


def test_zero_ratio_never_chosen():
    mixer = Mixer({"a": 10, "b": 10, "c": 10}, {"b": 0.0}, seed=0)
    assert mixer.probabilities["b"] == 0.0
    assert "b" not in {mixer.choose(s) for s in range(2000)}


def test_stream_passes_are_permutations_with_epoch_encoded():
    stream = IndexStream("ok_vqa", 7, seed=1)
    got = stream.take(7 * 3 + 2)                    # three full passes and two more
    for p in range(3):
        chunk = got[p * 7:(p + 1) * 7]
        assert sorted(i - p * 7 for i in chunk) == list(range(7))
        assert all(i // 7 == p for i in chunk)      # epoch = index // len
    assert [got[p * 7:(p + 1) * 7] for p in range(3)] != [got[:7]] * 3  # reshuffled per pass
    assert stream.state_dict() == {"pass": 3, "pos": 2, "size": 7}


def test_stream_is_reproducible_and_resumable():
    full = IndexStream("a", 10, seed=5).take(25)
    first = IndexStream("a", 10, seed=5)
    head = first.take(4) + first.take(9)            # chunk sizes do not matter
    resumed = IndexStream("a", 10, seed=5)
    resumed.load_state_dict(first.state_dict())
    assert head + resumed.take(12) == full
    skipped = IndexStream("a", 10, seed=5)
    skipped.advance(13)                              # bookkeeping without permutations
    assert skipped.take(12) == full[13:]
    assert IndexStream("b", 10, seed=5).take(10) != full[:10]  # the name is part of the seed


def test_stream_resume_with_other_size_is_an_error():
    state = IndexStream("a", 10, seed=0).state_dict()
    with pytest.raises(ConfigError, match="'a'.*10 samples.*now has 11"):
        IndexStream("a", 11, seed=0).load_state_dict(state)


@pytest.mark.parametrize("sizes, ratios, match", [
    ({}, None, "No training datasets"),
    ({"ok_vqa": 10}, {"okvqa": 2.0}, "okvqa.*Did you mean 'ok_vqa'"),
    ({"a": 10}, {"a": -1.0}, r"datasets.a.sample_ratio"),
    ({"a": 10}, {"a": float("nan")}, r"datasets.a.sample_ratio"),
    ({"a": 0}, None, "'a' has 0 training samples"),
    ({"a": 5, "b": 5}, {"a": 0, "b": 0}, "at least one a positive ratio"),
])
def test_bad_mixing_config(sizes, ratios, match):
    with pytest.raises(ConfigError, match=match):
        Mixer(sizes, ratios)


def test_negative_seed_is_usable():
    assert Mixer({"a": 1, "b": 1}, seed=-1).choose(0) in ("a", "b")
    assert len(IndexStream("a", 4, seed=-3).take(4)) == 4
    assert np.array_equal(IndexStream("a", 4, seed=-3).permutation(0), IndexStream("a", 4, seed=-3).permutation(0))

"""MixtureLoader and eval_loader on tiny in-file datasets that follow the dataset contract.

The datasets here stand in for the real ones (index >= len encodes the epoch, `collater`
drops bad samples and lists `_bad_files`). Datasets without a `collater` get the shared
`collate` of the dataset module.
"""
import json

import pytest
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from lavis_ib.common.errors import ConfigError, DataError, LavisIbError
from lavis_ib.datasets.datasets.base import BadSample
from lavis_ib.datasets.datasets.base import collate as shared_collate
from lavis_ib.datasets.loaders import MixtureLoader, eval_loader, eval_shard, num_samples


def collate(samples):
    good = [s for s in samples if not isinstance(s, BadSample)]
    return {"image": torch.stack([s["image"] for s in good]) if good else torch.zeros(0, 1),
            "uid": [s["uid"] for s in good], "text_input": [s["text_input"] for s in good],
            "_bad_files": [s.path for s in samples if isinstance(s, BadSample)],
            "_num_requested": len(samples)}


class ToySet(Dataset):
    """Map-style: sample i of epoch e is uid 'name:e*n+i'; indices in `bad` are unreadable."""

    def __init__(self, name, n, bad=()):
        self.name, self.n, self.bad = name, n, set(bad)

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        epoch, i = divmod(index, self.n)
        if i in self.bad:
            return BadSample(f"/data/{self.name}/{i}.jpg", "missing")
        return {"image": torch.tensor([float(index)]), "uid": f"{self.name}:{index}",
                "text_input": f"template drawn with epoch {epoch}"}

    def collater(self, samples):
        return collate(samples)


class ToyStream(IterableDataset):
    """Iterable: splits itself by rank and worker, as the webdataset reader does."""

    def __init__(self, name, n, rank=0, world_size=1):
        self.name, self.n, self.rank, self.world_size, self.epoch = name, n, rank, world_size, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for i in range(self.rank * nw + wid, self.n, self.world_size * nw):
            yield {"image": torch.tensor([float(i)]), "uid": f"{self.name}:{self.epoch}:{i}", "text_input": ""}

    def collater(self, samples):
        return collate(samples)


def make_sets(**bad):
    return {"a": ToySet("a", 37, bad.get("a", ())), "b": ToySet("b", 101, bad.get("b", ())),
            "ok_vqa": ToySet("ok_vqa", 13, bad.get("ok_vqa", ()))}


RATIOS = {"ok_vqa": 2.0}


def loader(world_size=1, rank=0, micro=3, global_bs=12, num_workers=0, datasets=None, **kw):
    return MixtureLoader(datasets or make_sets(), RATIOS, global_bs, micro, rank, world_size,
                         seed=11, num_workers=num_workers, **kw)


def run(ld, steps):
    """Per step: (dataset, [uids of micro-batch 0], [uids of micro-batch 1], ...)."""
    out = []
    for _ in range(steps):
        batches = ld.next_step()
        assert len(batches) == ld.accum_steps
        out.append((ld.last_dataset, [b["uid"] for b in batches]))
    return out


def global_batches(world_size, micro, steps, **kw):
    """Each step's global batch as the concatenation of micro-batches by (accum, rank)."""
    per_rank = [run(loader(world_size, r, micro, **kw), steps) for r in range(world_size)]
    result = []
    for s in range(steps):
        names = {per_rank[r][s][0] for r in range(world_size)}
        assert len(names) == 1  # every rank chose the same dataset
        accum = len(per_rank[0][s][1])
        result.append((names.pop(), [u for a in range(accum) for r in range(world_size)
                                     for u in per_rank[r][s][1][a]]))
    return result


@pytest.mark.parametrize("unit", ["micro_batch", "step"])
def test_ranks_split_the_single_process_global_batch(unit):
    # groups of 3 slots (run.batch_size_train) whatever micro-batch a layout derives
    kw = dict(mix_unit=unit, mix_group=3)
    single = global_batches(1, 3, 25, **kw)                # accum 4
    assert global_batches(2, 3, 25, **kw) == single        # accum 2: slices (a, r) in order
    assert global_batches(2, 2, 25, **kw) == single        # accum 3, micro-batches straddle groups
    assert global_batches(3, 4, 25, **kw) == single        # 3 ranks, accum 1
    assert global_batches(6, 2, 25, **kw) == single        # 6 ranks, accum 1
    assert all(len(uids) == 12 for _, uids in single)
    mixed = sum(name is None for name, _ in single)        # steps holding several datasets
    assert (mixed > 10) if unit == "micro_batch" else (mixed == 0)


def test_micro_batches_hold_one_dataset_and_groups_draw_independently():
    ld = loader(2, 1, micro=3, mix_unit="micro_batch")
    group_names = []
    for _ in range(40):
        uids = [b["uid"] for b in ld.next_step()]
        for micro_batch, names in zip(uids, ld.last_datasets):
            assert len(set(names)) == 1 and {u.split(":")[0] for u in micro_batch} == set(names)
        group_names += [names[0] for names in ld.last_datasets]
    # both micro-batches of one step agree no more often than independent draws would
    same = sum(a == b for a, b in zip(group_names[::2], group_names[1::2]))
    assert same < 32 and len(set(group_names)) == 3


def test_sample_unit_mixes_inside_micro_batches_on_any_layout():
    kw = dict(mix_unit="sample", global_bs=12)
    single = global_batches(1, 6, 20, **kw)
    assert global_batches(2, 6, 20, **kw) == single           # same micro-batches, other ranks
    regrouped = global_batches(2, 2, 20, **kw)                # other micro size: datasets are
    assert [sorted(u) for _, u in regrouped] == [sorted(u) for _, u in single]  # grouped per micro-batch
    ld, sizes = loader(1, 0, micro=6, mix_unit="sample"), []
    for _ in range(30):
        for batch, names in zip(ld.next_step(), ld.last_datasets):
            assert [u.split(":")[0] for u in batch["uid"]] == names   # each dataset's part in order
            assert batch["image"][:, 0].tolist() == [float(u.split(":")[1]) for u in batch["uid"]]
            assert num_samples(batch) == 6 and batch["_num_requested"] == 6
            sizes.append(len(set(names)))
    assert max(sizes) >= 2


def test_mixed_micro_batches_count_bad_samples_per_dataset():
    ld = loader(datasets=make_sets(ok_vqa=range(13)), mix_unit="sample", max_bad_sample_fraction=1.0)
    for _ in range(20):
        for batch, names in zip(ld.next_step(), ld.last_datasets):
            assert len(batch["_bad_files"]) == names.count("ok_vqa") == 3 - num_samples(batch)
            assert len(batch["uid"]) == num_samples(batch) and batch["image"].shape[0] == len(batch["uid"])
    events = ld.pop_bad_events()
    assert events and {e["dataset"] for e in events} == {"ok_vqa"}


def test_choice_sequence_same_for_one_and_two_ranks():
    one = [name for name, _ in run(loader(1, 0, mix_unit="step"), 60)]
    two = [name for name, _ in run(loader(2, 1, mix_unit="step"), 60)]
    assert one == two and len(set(one)) == 3


def test_streams_cover_each_dataset_once_per_pass_with_epoch_encoded():
    seen = {"a": [], "b": [], "ok_vqa": []}
    for name, uids in global_batches(1, 4, 80, global_bs=4):
        seen[name] += [int(u.split(":")[1]) for u in uids]
    for name, n in (("a", 37), ("b", 101), ("ok_vqa", 13)):
        full = len(seen[name]) // n
        assert full >= 1, name
        for p in range(full):           # pass p is a permutation of p*n .. p*n+n-1
            assert sorted(seen[name][p * n:(p + 1) * n]) == list(range(p * n, (p + 1) * n))


@pytest.mark.parametrize("num_workers, unit", [(0, "micro_batch"), (2, "micro_batch"), (0, "sample"), (2, "step")])
def test_resume_continues_the_exact_sequence(num_workers, unit):
    reference = run(loader(2, 1, num_workers=num_workers, mix_unit=unit), 14)
    first = loader(2, 1, num_workers=num_workers, mix_unit=unit)
    head = run(first, 6)
    state = json.loads(json.dumps(first.state_dict()))  # survives a JSON/torch.save round trip
    first.close()
    resumed = loader(2, 1, num_workers=num_workers, mix_unit=unit)
    resumed.load_state_dict(state)
    assert head + run(resumed, 8) == reference
    # rewinding a loader whose workers are mid-run also works
    resumed.load_state_dict(state)
    assert run(resumed, 8) == reference[6:]
    resumed.close()


@pytest.mark.parametrize("unit", ["micro_batch", "sample"])
def test_resume_from_step_alone_replays_choices(unit):
    reference = run(loader(mix_unit=unit), 20)
    resumed = loader(mix_unit=unit)
    resumed.load_state_dict({"step": 9})
    assert run(resumed, 11) == reference[9:]


def test_workers_give_the_same_batches_as_the_main_process():
    assert run(loader(2, 0, num_workers=2), 10) == run(loader(2, 0, num_workers=0), 10)


def test_resume_with_other_datasets_or_seed_is_an_error():
    state = loader().state_dict()
    fewer = make_sets()
    del fewer["b"]
    with pytest.raises(ConfigError, match="same datasets"):
        MixtureLoader(fewer, RATIOS, 12, 3, 0, 1, seed=11).load_state_dict(state)
    with pytest.raises(ConfigError, match="run.seed 11"):
        MixtureLoader(make_sets(), RATIOS, 12, 3, 0, 1, seed=12).load_state_dict(state)
    with pytest.raises(ConfigError, match="mix_unit micro_batch.*this run has sample"):
        loader(mix_unit="sample").load_state_dict(state)
    with pytest.raises(ConfigError, match=r"groups of 3\), this run has micro_batch \(groups of 4"):
        loader(mix_group=4).load_state_dict(state)
    old = {k: v for k, v in state.items() if k not in ("mix_unit", "mix_group")}  # saved before mix_unit
    with pytest.raises(ConfigError, match="run.mix_unit: step"):
        loader().load_state_dict(old)
    loader(mix_unit="step").load_state_dict(old)
    with pytest.raises(ConfigError, match="run.mix_unit: 'batch' is not one of micro_batch, sample, step"):
        loader(mix_unit="batch")


def test_bad_samples_counted_and_listed():
    ld = loader(datasets=make_sets(ok_vqa=[0, 1, 2]), max_bad_sample_fraction=1.0)
    bad = requested = 0
    for _ in range(30):
        for batch in ld.next_step():
            requested += batch["_num_requested"]
            bad += len(batch["_bad_files"])
            assert num_samples(batch) == len(batch["uid"])
    assert bad > 0 and ld.num_bad == bad and ld.num_requested == requested == 30 * 12
    assert ld.bad_fraction() == pytest.approx(bad / requested)
    assert sorted(ld.bad_files) == [f"/data/ok_vqa/{i}.jpg" for i in range(3)]  # distinct, each once
    state = ld.state_dict()
    again = loader(datasets=make_sets(ok_vqa=[0, 1, 2]))
    again.load_state_dict(state)
    assert (again.num_bad, again.num_requested, again.bad_files) == (bad, requested, ld.bad_files)


def test_too_many_bad_samples_stop_with_the_files_listed():
    ld = loader(datasets=make_sets(a=range(0, 37, 2)), max_bad_sample_fraction=0.05, bad_sample_grace=0)
    with pytest.raises(DataError) as err:
        run(ld, 50)
    assert isinstance(err.value, LavisIbError)
    message = str(err.value)
    assert "max_bad_sample_fraction = 0.05" in message and "/data/a/" in message
    assert all(f in message for f in ld.bad_files[:20])


def test_grace_keeps_a_few_early_bad_files_from_stopping_the_run():
    # one unreadable sample in 37 (2.7%): tolerated while it is under 1% of the 1000-sample
    # grace (at most 10 bad samples), stopped once the real fraction counts
    ld = MixtureLoader({"a": ToySet("a", 37, [5])}, None, 12, 3, 0, 1, seed=0)
    run(ld, 20)
    assert 1 <= ld.num_bad <= 10 and ld.bad_fraction() > 0.01
    with pytest.raises(DataError, match="/data/a/5.jpg"):
        run(ld, 100)
    assert ld.num_bad == 11


def test_iterable_dataset_is_pulled_from_its_own_stream():
    # 2 ranks x 2 workers: each of the 40 samples exactly once per pass over the ranks
    seen, dataset_seq = [], []
    for rank in range(2):
        sets = make_sets()
        sets["web"] = ToyStream("web", 40, rank, 2)
        ld = MixtureLoader(sets, RATIOS, 8, 2, rank, 2, seed=11, num_workers=2, sizes={"web": 40}, mix_unit="step")
        steps = run(ld, 24)
        dataset_seq.append([name for name, _ in steps])
        uids = [u for name, micro in steps if name == "web" for m in micro for u in m]
        seen.append(uids)
        assert all(len(m) == 2 for name, micro in steps for m in micro)
        state = ld.state_dict()
        assert state["iterables"]["web"]["consumed"] == len(uids)
        ld.close()
        # resume is best-effort for iterables: a new pass starts instead of skipping samples
        resumed = MixtureLoader(sets, RATIOS, 8, 2, rank, 2, seed=11, num_workers=0, sizes={"web": 40},
                                mix_unit="step")
        resumed.load_state_dict(state)
        after = run(resumed, 12)
        web = [u for name, micro in after if name == "web" for m in micro for u in m]
        passes = state["iterables"]["web"]["pass"]
        assert web and web[0].startswith(f"web:{passes + 1}:")
        assert [n for n, _ in after] == [resumed.mixer.choose(s) for s in range(24, 36)]
    assert dataset_seq[0] == dataset_seq[1] and "web" in dataset_seq[0]
    n0 = len(seen[0])
    assert len(seen[1]) == n0 >= 20  # each rank has 20 samples per pass
    first_pass = seen[0][:20] + seen[1][:20]
    assert sorted(first_pass) == sorted(f"web:0:{i}" for i in range(40))
    assert all(u.startswith("web:1:") for u in seen[0][20:40])  # set_epoch reached the workers


@pytest.mark.parametrize("unit", ["micro_batch", "sample"])
def test_iterable_dataset_fills_its_slots_in_mixed_steps(unit):
    sets = make_sets()
    sets["web"] = ToyStream("web", 40)
    ld = MixtureLoader(sets, RATIOS, 8, 2, 0, 1, seed=11, num_workers=2, sizes={"web": 40}, mix_unit=unit)
    web = []
    for _ in range(30):
        for batch, names in zip(ld.next_step(), ld.last_datasets):
            assert [u.split(":")[0] for u in batch["uid"]] == names and len(names) == 2
            web += [u for u in batch["uid"] if u.startswith("web")]
    assert ld.last_dataset is None or unit == "micro_batch"
    assert len(web) == ld.state_dict()["iterables"]["web"]["consumed"] > 0
    first = web[:40]                      # the stream's first pass, each sample once
    assert len(set(first)) == len(first) and all(u.startswith("web:0:") for u in first)
    ld.close()


def test_iterable_without_size_is_a_config_error():
    sets = {"web": ToyStream("web", 8)}
    with pytest.raises(ConfigError, match="datasets.web.size"):
        MixtureLoader(sets, None, 4, 2, 0, 1, seed=0)
    ld = MixtureLoader(sets, None, 4, 2, 0, 1, seed=0, sizes={"web": 8})
    assert [len(b["uid"]) for b in ld.next_step()] == [2, 2]
    sets["web"].size = 8  # the size attribute an iterable dataset may carry
    assert MixtureLoader(sets, None, 4, 2, 0, 1, seed=0).probabilities == {"web": 1.0}


def test_empty_iterable_is_a_data_error():
    ld = MixtureLoader({"web": ToyStream("web", 0)}, None, 2, 2, 0, 1, seed=0, sizes={"web": 1})
    with pytest.raises(DataError, match="'web' yielded no samples"):
        ld.next_step()


@pytest.mark.parametrize("kwargs, match", [
    (dict(global_bs=10, micro=3), r"global_batch_size \(10\).*3\) x world size \(1\) = 3"),
    (dict(global_bs=12, micro=3, world_size=8), r"= 24; e.g. set it to 24"),
    (dict(rank=2, world_size=2), "rank 2 is outside world size 2"),
    (dict(micro=0), "batch_size_train must be a positive integer"),
    (dict(max_bad_sample_fraction=1.5), "max_bad_sample_fraction"),
])
def test_bad_loader_config(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        loader(**kwargs)


def test_accum_steps():
    assert loader(2, 0, micro=2, global_bs=12).accum_steps == 3


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("n", [10, 2])
def test_eval_loader_covers_every_sample_exactly_once(world_size, n):
    dataset = ToySet("val", n)
    uids = []
    for rank in range(world_size):
        batches = list(eval_loader(dataset, 3, rank, world_size, num_workers=0))
        assert all(len(b["uid"]) <= 3 for b in batches)
        uids += [u for b in batches for u in b["uid"]]
    assert uids == [f"val:{i}" for i in range(n)]  # contiguous shards: rank order is sample order


def test_eval_loader_with_workers_and_shards():
    uids = [u for b in eval_loader(ToySet("val", 11), 4, 1, 2, num_workers=2) for u in b["uid"]]
    assert uids == [f"val:{i}" for i in eval_shard(11, 1, 2)] == [f"val:{i}" for i in range(5, 11)]
    with pytest.raises(ConfigError, match="batch_size_eval"):
        eval_loader(ToySet("val", 3), 0, 0, 1)


def test_shared_collate_drops_bad_samples():
    batch = shared_collate([{"image": torch.zeros(2), "q": "x"}, BadSample("/x.jpg", "missing"),
                            {"image": torch.ones(2), "q": "y"}])
    assert batch["image"].shape == (2, 2) and batch["q"] == ["x", "y"]
    assert batch["_bad_files"] == ["/x.jpg"] and batch["_num_requested"] == 3 and num_samples(batch) == 2
    with pytest.raises(DataError, match="'image' tensors have different shapes"):
        shared_collate([{"image": torch.zeros(2)}, {"image": torch.zeros(3)}])

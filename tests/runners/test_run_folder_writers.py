"""Who may write into a folder, decided from its files alone (no run is started here):
which folders are a training run's, which are in use for a new run, which `run.overwrite`
may move, and when a changed mixture is a changed resume setting."""
from __future__ import annotations

import json

import pytest

from lavis_ib.common.errors import ConfigError
from lavis_ib.runners.run_folder import (check_evaluation_name, claim_problem, config_changes,
                                         is_training_run)


@pytest.mark.parametrize("marker", [".lavis_ib.lock", "checkpoints/", "log.jsonl",
                                    "run_info.json"])
def test_a_training_run_is_known_by_any_of_its_records(tmp_path, marker):
    if marker.endswith("/"):
        (tmp_path / marker).mkdir()
    else:   # a training run's run_info.json records its batching
        (tmp_path / marker).write_text(json.dumps({"world_size": 1, "global_batch_size": 8}))
    assert is_training_run(str(tmp_path))


def test_an_evaluation_folder_is_not_a_training_run(tmp_path):
    (tmp_path / "run_info.json").write_text(json.dumps({"lavis_ib": "x", "world_size": 1}))
    (tmp_path / "config.yaml").write_text("run: {}\n")
    (tmp_path / "eval").mkdir()
    assert not is_training_run(str(tmp_path))
    assert not is_training_run(str(tmp_path / "missing"))


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "a\\b", "/abs"])
def test_an_evaluation_name_must_be_a_plain_folder_name(name):
    with pytest.raises(ConfigError, match="must be a plain folder name"):
        check_evaluation_name(name)


def test_plain_evaluation_names_pass():
    for name in ("heldout", "zero-shot_2", "v1.2", "..x"):
        check_evaluation_name(name)


@pytest.mark.parametrize("record", ["log.jsonl", "config.yaml", "run_info.json", "tb",
                                    "checkpoints", "eval"])
def test_any_run_record_makes_a_folder_in_use_for_a_new_run(tmp_path, record):
    (tmp_path / record).write_text("")
    problem = claim_problem(str(tmp_path), overwrite=False)
    assert problem == (f"{tmp_path} holds another run's files ({record}); set run.resume=auto "
                       f"to continue it, run.overwrite=true to move it aside, or another "
                       f"run.output_dir.")
    assert claim_problem(str(tmp_path), overwrite=True) is None   # a run folder: moved aside


def test_overwrite_refuses_a_folder_holding_anything_else(tmp_path):
    for name in ("log.jsonl", "notes.txt", ".lavis_ib.lock", "run_info.json.tmp-12"):
        (tmp_path / name).write_text("")
    (tmp_path / "src").mkdir()
    problem = claim_problem(str(tmp_path), overwrite=True)
    assert "also holds notes.txt, src, which no run writes" in problem
    empty = tmp_path / "empty"
    empty.mkdir()
    assert claim_problem(str(empty), overwrite=True) is None
    assert claim_problem(str(empty), overwrite=False) is None
    (empty / "notes.txt").write_text("")   # unrelated files alone: a new run may start there
    assert claim_problem(str(empty), overwrite=False) is None


def test_only_a_moved_share_of_the_mixture_is_a_change():
    saved = {"datasets": ["a", "b"], "sample_ratios": {"a": 1.0, "b": 2.0}}

    def changes(**ratios):
        return [c[1:] for c in config_changes(saved, {**saved, "sample_ratios": ratios})]

    assert changes(a=2.0, b=4.0) == []              # the same proportions
    assert changes(a=1.0, b=50.0) == [("datasets.b.sample_ratio", 2.0, 50.0)]
    assert changes(a=3.0, b=2.0) == [("datasets.a.sample_ratio", 1.0, 3.0)]
    assert config_changes({"datasets": ["a", "b"]}, saved) == []   # an older checkpoint

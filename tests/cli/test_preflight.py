"""Fault matrix of the inputs issue, configuration rows: each bad project (or override)
and the one line that must name it, found before any model or dataset is built; all
problems of a project come back together; `lavis-ib check` runs these checks alone."""
from __future__ import annotations

import os
import textwrap

import pytest
import yaml

from lavis_ib.cli.preflight import checked_config
from lavis_ib.common.errors import ConfigError
from lavis_ib.common.schema import validate_run
from lavis_ib.testing.fixtures import write_fixtures

DATASETS = ("coco_caption", "ok_vqa", "msvd_qa")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("preflight")
    return root, write_fixtures(str(root), list(DATASETS))


def project(root, fixtures, run=None, datasets=None, model=None, extra=""):
    """A small valid project over the fixture files, with the given changes merged in."""
    entries = {name: dict(fixtures[name]) for name in DATASETS}
    for name, change in (datasets or {}).items():
        entries[name] = {**entries.get(name, {}), **change}
    body = {"model": {"arch": "instructblip", "model_type": "tiny_vicuna", **(model or {})},
            "datasets": entries,
            "run": {"max_iters": 4, "val_every": 2, "select_metric": ["coco_caption.cider"],
                    "output_dir": str(root / "out"), **(run or {})}}
    path = root / f"project_{abs(hash(repr((run, datasets, model, extra))))}.yaml"
    path.write_text(yaml.safe_dump(body) + extra)
    return str(path)


def test_a_valid_project_passes_every_check(data):
    root, fixtures = data
    cfg = checked_config(project(root, fixtures))
    assert sorted(cfg.config.datasets) == sorted(DATASETS)


def _answer_list_gone(fixtures):
    info = {**fixtures["msvd_qa"]["build_info"], "answer_list": None}
    info["annotations"] = {**info["annotations"], "train": None}
    return {"msvd_qa": {"build_info": info}}


# (row id, project changes, the line expected)
CONFIG_ROWS = [
    ("select_metric misspelt", dict(run={"select_metric": ["coco_caption.cidr"]}),
     "run.select_metric 'coco_caption.cidr': the captioning task of 'coco_caption' produces "
     "bleu4, cider, meteor, num_samples. Did you mean 'cider'?"),
    ("select_metric of a dataset not validated", dict(run={"select_metric": ["textcaps.cider"]}),
     "run.select_metric 'textcaps.cider': dataset 'textcaps' is not validated"),
    ("generate key the model lacks", dict(datasets={"coco_caption": {"generate": {"num_beam": 3}}}),
     "datasets.coco_caption.generate.num_beam: model.generate has no such argument. "
     "Did you mean 'num_beams'?"),
    ("generate settings under rank", dict(datasets={"ok_vqa": {"inference": "rank", "generate": {
        "num_beams": 2}}}), "datasets.ok_vqa.generate is only read with inference: generate"),
    ("rank over answer_list without a vocabulary", dict(datasets={"ok_vqa": {"inference": "rank"}}),
     "datasets.ok_vqa: inference 'rank' with candidates: answer_list, but its dataset class has no "
     "answer vocabulary"),
    ("answer_list source missing", "answer_list_gone",
     "datasets.msvd_qa: candidates: answer_list needs build_info.answer_list"),
    ("annotation file missing", dict(datasets={"coco_caption": {"build_info": {
        "annotations": {"val": {"storage": "/nonexistent/val.json"}}}}}),
     "annotation file (build_info.annotations.val) '/nonexistent/val.json' does not exist"),
    ("unknown processor", dict(datasets={"ok_vqa": {"vis_processor": {"eval": {"name": "blip_imag_eval"}}}}),
     "datasets.ok_vqa.vis_processor.eval: unknown processor 'blip_imag_eval'. Did you mean "
     "'blip_image_eval'?"),
    ("sample_ratio not a number", dict(datasets={"ok_vqa": {"sample_ratio": "abc"}}),
     "datasets.ok_vqa.sample_ratio must be a finite number >= 0 (0: evaluation only); got 'abc'."),
    ("model max_txt_len 0", dict(model={"max_txt_len": 0}),
     "model.max_txt_len must be an integer >= 1; got 0."),
    ("unknown lr schedule", dict(run={"lr_sched": "cosine"}), "run.lr_sched: unknown lr_scheduler 'cosine'."),
    ("plugin that does not import", dict(extra="plugins: [no_such_module_xyz]\n"),
     "plugins: plugin module 'no_such_module_xyz' cannot be imported"),
    # audit probes C8e/f: generate values against models.generation.range_problems, before building
    ("generate num_beams 0", dict(datasets={"coco_caption": {"generate": {"num_beams": 0}}}),
     "datasets.coco_caption.generate.num_beams=0 must be at least 1."),
    ("generate max_length 0", dict(datasets={"coco_caption": {"generate": {"max_length": 0}}}),
     "datasets.coco_caption.generate.max_length=0 must be at least 1."),
    ("generate per-family num_beams 0", dict(datasets={"coco_caption": {"generate": {
        "num_beams": {"vicuna": 0, "flant5": 3}}}}),
     "datasets.coco_caption.generate.num_beams.vicuna=0 must be at least 1."),
    ("generate min_length above max_length", dict(datasets={"coco_caption": {"generate": {
        "min_length": 5, "max_length": 3}}}),
     "datasets.coco_caption.generate.min_length=5 must not exceed datasets.coco_caption.generate."
     "max_length=3."),
]


@pytest.mark.parametrize("changes,expected", [r[1:] for r in CONFIG_ROWS], ids=[r[0] for r in CONFIG_ROWS])
def test_config_fault_matrix(data, changes, expected):
    root, fixtures = data
    if changes == "answer_list_gone":
        changes = dict(datasets=_answer_list_gone(fixtures))
    with pytest.raises(ConfigError) as err:
        checked_config(project(root, fixtures, **changes))
    assert expected in str(err.value)


def test_all_problems_are_reported_together(data):
    root, fixtures = data
    path = project(root, fixtures, run={"batch_size_train": 0, "select_metric": ["coco_caption.cidr"]},
                   datasets={"coco_caption": {"build_info": {**fixtures["coco_caption"]["build_info"],
                                                             "images": {"storage": "/nonexistent/img"}}},
                             "ok_vqa": {"inference": "rank"}})
    with pytest.raises(ConfigError) as err:
        checked_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: 4 problems found before building anything:")
    for part in ("run.batch_size_train must be an integer >= 1", "'/nonexistent/img' does not exist",
                 "coco_caption.cidr", "no answer vocabulary"):
        assert part in message
    assert message.count("/nonexistent/img") == 1   # a folder shared by splits is named once


@pytest.mark.parametrize("option", ["datasets.ok_vqa.promt=x", "datasets.ok_vqa=3"])
def test_a_dataset_that_failed_to_compose_is_reported_once(data, option):
    """The typo is the one problem: select_metric does not call the entry unvalidated."""
    root, fixtures = data
    path = project(root, fixtures, run={"select_metric": ["ok_vqa.acc"]})
    with pytest.raises(ConfigError) as err:
        checked_config(path, [option])
    message = str(err.value)   # one problem is raised as its own line, not as a list
    assert message.startswith("--options datasets.ok_vqa") and "\n" not in message


def test_a_dataset_at_sample_ratio_0_is_validated_but_never_trained_on(data):
    """`sample_ratio: 0` is the spelling of an evaluation-only dataset: the pre-flight
    accepts it, the runner's mixture never draws it, training validation still runs it."""
    from lavis_ib.cli.dispatch import main
    from lavis_ib.common.config import Config
    from lavis_ib.datasets.loaders import MixtureLoader
    from lavis_ib.runners.runner_iter import RunnerIter
    from lavis_ib.tasks.base_task import TrainTask

    root, fixtures = data
    path = project(root, fixtures, datasets={"ok_vqa": {"sample_ratio": 0}},
                   run={"select_metric": ["ok_vqa.acc"], "device": "cpu"})
    assert main(["check", path]) == 0
    cfg = Config(path)
    runner = RunnerIter(cfg, None, None, TrainTask(cfg.config).build_datasets(cfg.config))
    sets, ratios = runner._train_sets()
    assert "ok_vqa" in sets and ratios["ok_vqa"] == 0.0
    loader = MixtureLoader(sets, ratios, 4, 2, 0, 1, seed=0)
    assert loader.probabilities["ok_vqa"] == 0.0
    drawn = {n for step in range(200) for n in loader.plan.slot_names(step)}
    assert drawn == {"coco_caption", "msvd_qa"}
    assert "ok_vqa" in runner._validated()


@pytest.mark.parametrize("ratio", [-1, float("inf"), float("nan"), True])
def test_negative_and_non_finite_sample_ratios_are_refused(data, ratio):
    root, fixtures = data
    with pytest.raises(ConfigError, match=r"datasets.ok_vqa.sample_ratio must be a finite "
                                          r"number >= 0 \(0: evaluation only\); got "):
        checked_config(project(root, fixtures, datasets={"ok_vqa": {"sample_ratio": ratio}}))


@pytest.mark.parametrize("option", ["datasets.ok_vqa.sample_ratio=.inf", "run.init_lr=.inf",
                                    "run.max_skipped_steps=-1", "run.min_lr=1.0",
                                    "datasets.ok_vqa.generate.num_beams=0"])
def test_out_of_range_options_stop_the_check_command(data, capsys, option):
    """Audit probes C8a-f: each a pre-flight line of `lavis-ib check` (exit 2), not only a
    runtime check (the mixer, the scheduler, generate)."""
    from lavis_ib.cli.dispatch import main

    root, fixtures = data
    assert main(["check", project(root, fixtures), "--options", option]) == 2
    key = option.partition("=")[0]
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"lavis-ib check: error: {key}") and "\n" not in line


def test_every_training_dataset_at_sample_ratio_0_is_refused(data):
    root, fixtures = data
    zero = {name: {"sample_ratio": 0} for name in DATASETS}
    with pytest.raises(ConfigError, match="every training dataset has sample_ratio 0"):
        checked_config(project(root, fixtures, datasets=zero))
    checked_config(project(root, fixtures, datasets=zero), training=False)   # evaluation


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("run:\n  max_iters: 10\n  seed: [1, 2\nmodel: {}\n")
    with pytest.raises(ConfigError) as err:
        checked_config(str(path))
    assert str(err.value) == (f"project file '{path}' is not valid YAML at line 4, column 6: "
                              f"did not find expected ',' or ']'")


# (row id, run mapping, the line expected) -- range checks of the typed run schema
RUN_ROWS = [
    ("batch_size_train 0", {"batch_size_train": 0}, "run.batch_size_train must be an integer >= 1; got 0."),
    ("batch_size_train -4", {"batch_size_train": -4}, "run.batch_size_train must be an integer >= 1; got -4."),
    ("negative init_lr", {"init_lr": -1e-5}, "run.init_lr must be a finite number > 0; got -1e-05."),
    ("empty output_dir", {"output_dir": ""}, "run.output_dir is empty; give a folder path."),
    ("val_every -1", {"val_every": -1}, "run.val_every must be an integer >= 0; got -1."),
    ("keep_last 0", {"keep_last": 0}, "run.keep_last must be an integer >= 1; got 0."),
    ("beta2 1", {"beta2": 1.0}, "run.beta2 must be in [0, 1); got 1.0."),
    ("fraction 2", {"max_bad_sample_fraction": 2.0}, "run.max_bad_sample_fraction must be in [0, 1]; got 2.0."),
    ("grad_clip 0", {"grad_clip": 0.0}, "run.grad_clip must be null (no clipping) or a finite number > 0; got 0.0."),
    ("global batch 0", {"global_batch_size": 0}, "run.global_batch_size must be null or an integer >= 1; got 0."),
    ("device gpu", {"device": "gpu"}, "run.device: 'gpu' is not one of auto, cpu, cuda (or cuda:N)."),
    ("select_metric without a dot", {"select_metric": ["cider"]},
     "run.select_metric: write each item as 'dataset.metric' (e.g. coco_caption.cider); got ['cider']."),
    ("unset variable", {"output_dir": "$LAVIS_IB_UNSET_VAR_X/run"},
     "run.output_dir: environment variable $LAVIS_IB_UNSET_VAR_X is not set"),
    ("run as a list", ["max_iters", 3], "run must be a mapping of run settings"),
    # audit probes C8a, C8b, C8d: negative counts, non-finite floats and LRs above init_lr
    ("max_skipped_steps -1", {"max_skipped_steps": -1}, "run.max_skipped_steps must be an integer >= 0; got -1."),
    ("init_lr inf", {"init_lr": float("inf")}, "run.init_lr must be a finite number > 0; got inf."),
    ("init_lr nan", {"init_lr": float("nan")}, "run.init_lr must be a finite number > 0; got nan."),
    ("weight_decay inf", {"weight_decay": float("inf")}, "run.weight_decay must be a finite number >= 0; got inf."),
    ("warmup_lr nan", {"warmup_lr": float("nan")}, "run.warmup_lr must be a finite number >= 0; got nan."),
    ("grad_clip inf", {"grad_clip": float("inf")},
     "run.grad_clip must be null (no clipping) or a finite number > 0; got inf."),
    ("lr_decay_rate nan", {"lr_decay_rate": float("nan")}, "run.lr_decay_rate must be in (0, 1]; got nan."),
    ("min_lr above init_lr", {"min_lr": 1.0},
     "run.min_lr (1.0) must not exceed run.init_lr (1e-05): the schedule goes from warmup_lr up to "
     "init_lr, then down to min_lr."),
    ("warmup_lr above init_lr", {"init_lr": 1e-4, "warmup_lr": 1e-3},
     "run.warmup_lr (0.001) must not exceed run.init_lr (0.0001): the schedule goes from warmup_lr up "
     "to init_lr, then down to min_lr."),
]


@pytest.mark.parametrize("run,expected", [r[1:] for r in RUN_ROWS], ids=[r[0] for r in RUN_ROWS])
def test_run_range_fault_matrix(run, expected):
    with pytest.raises(ConfigError) as err:
        validate_run(run)
    assert str(err.value) == expected or (expected.endswith("is not set") and expected in str(err.value)) \
        or (expected.startswith("run must be") and str(err.value).startswith(expected))


def test_home_and_environment_variables_expand_in_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SCRATCH_X", "/scratch/me")
    run = validate_run({"output_dir": "~/runs/a", "resume": "$SCRATCH_X/ckpt"})
    assert run.output_dir == os.path.join(str(tmp_path), "runs/a") and run.resume == "/scratch/me/ckpt"


def test_run_as_a_list_in_a_project_is_one_line(data):
    root, fixtures = data
    path = root / "runlist.yaml"
    path.write_text(textwrap.dedent("""
        model: {arch: instructblip, model_type: tiny_vicuna}
        run: [max_iters, 3]
    """))
    with pytest.raises(ConfigError, match=r"'run' must be a mapping of settings; got ListConfig"):
        checked_config(str(path))


def test_check_command_exit_codes(data, capsys):
    from lavis_ib.cli.dispatch import main

    root, fixtures = data
    good = project(root, fixtures)
    assert main(["check", good]) == 0
    assert capsys.readouterr().out.strip().endswith("OK (instructblip:tiny_vicuna; coco_caption, msvd_qa, ok_vqa)")
    assert main(["check", good, "--options", "run.keep_last=0"]) == 2
    assert capsys.readouterr().err.strip() == "lavis-ib check: error: run.keep_last must be an integer >= 1; got 0."


def test_train_and_evaluate_check_before_building(data, monkeypatch):
    import lavis_ib.cli.evaluate
    import lavis_ib.cli.train

    root, fixtures = data
    for command in ("lavis_ib.cli.train", "lavis_ib.cli.evaluate"):   # the name each command calls
        monkeypatch.setattr(f"{command}.build", lambda *a: pytest.fail("built before checking"))
    bad = project(root, fixtures, run={"select_metric": ["coco_caption.cidr"]})
    with pytest.raises(ConfigError, match="coco_caption.cidr"):
        lavis_ib.cli.train.main(["--cfg-path", bad])
    with pytest.raises(ConfigError, match="run.max_iters must be an integer >= 1"):
        lavis_ib.cli.evaluate.main(["--cfg-path", bad, "--options", "run.max_iters=0"])
    # evaluation never selects by metric: only training checks select_metric
    assert "select_metric" not in str(pytest.raises(ConfigError, lavis_ib.cli.evaluate.main, [
        "--cfg-path", bad, "--options", "run.max_iters=0"]).value)


def test_an_ocr_dataset_without_token_source_stops_before_any_model(tmp_path):
    """OCR-VQA's annotations carry no OCR tokens: without build_info.ocr.<split> every
    prompt would read "OCR tokens: . Question: ...", so the pre-flight names the key."""
    fixtures = write_fixtures(str(tmp_path), ["ocr_vqa"])
    entry = dict(fixtures["ocr_vqa"])
    entry["build_info"] = {k: v for k, v in entry["build_info"].items() if k != "ocr"}
    body = {"model": {"arch": "instructblip", "model_type": "tiny_vicuna"},
            "datasets": {"ocr_vqa": entry},
            "run": {"max_iters": 2, "val_every": 0, "select_metric": [],
                    "output_dir": str(tmp_path / "out")}}
    path = tmp_path / "ocr.yaml"
    path.write_text(yaml.safe_dump(body))
    with pytest.raises(ConfigError, match=r"set build_info\.ocr\.train to an OCR file, either "
                                          r"the Rosetta layout"):
        checked_config(str(path))
    body["datasets"]["ocr_vqa"] = fixtures["ocr_vqa"]
    path.write_text(yaml.safe_dump(body))
    checked_config(str(path))


def test_every_numeric_run_key_refuses_negative_counts_and_non_finite_floats():
    """The reliability audit of the range block, kept for keys added later: -1 for every count
    and inf / nan for every float of `RunConfig` are each one line naming the key."""
    import math
    import typing

    from lavis_ib.common.schema import FIELDS, _base_type

    for key in FIELDS:
        kind = _base_type(key)
        bad = [-1] if kind is int else [math.inf, math.nan, -math.inf] if kind is float else []
        for value in bad:
            problems = []
            validate_run({key: value}, collect=problems)
            assert any(p.startswith(f"run.{key}") for p in problems), (key, value, problems)
    assert typing.get_origin(_base_type("select_metric")) is list   # the loop saw every kind

"""Every experiment of the paper (arXiv 2305.06500v2: Table 2 for both families, Table 3 as
published, Figure 4's arms) has projects that pass every pre-flight check but the files
this machine lacks, whose runs land in the paper's rows, and whose evaluation prompts are
the text the multitask arms were trained on. A tiny variant of Figure 4's prefixed arm
trains, evaluates into its run and is reported."""
from __future__ import annotations

import functools
import json
import re

import pytest
import yaml
from omegaconf import OmegaConf

from lavis_ib.cli.preflight import config_problems
from lavis_ib.common.config import Config
from lavis_ib.common.paths import package_path
from lavis_ib.processors import build_processors
from lavis_ib.report.mapping import MEASURES, Mean, match_row, run_settings

IB, B2 = "projects/instructblip", "projects/blip2"
TRAINING = [f"{IB}/instruction_tuning_flant5xl.yaml", f"{IB}/instruction_tuning_vicuna7b.yaml",
            f"{IB}/instruction_tuning_vicuna7b_no_balancing.yaml",
            f"{IB}/instruction_tuning_vicuna7b_no_instruction_qformer.yaml",
            f"{IB}/multitask_plain_flant5xl.yaml", f"{IB}/multitask_prefix_flant5xl.yaml"]
EVALUATION = [f"{IB}/eval_heldin_heldout_flant5xl.yaml",
              f"{IB}/eval_heldin_heldout_flant5xl_no_instruction_qformer.yaml",
              f"{IB}/eval_heldin_heldout_vicuna7b.yaml",
              f"{IB}/eval_heldin_heldout_vicuna7b_no_instruction_qformer.yaml",
              f"{IB}/eval_multitask_plain_flant5xl.yaml", f"{IB}/eval_multitask_prefix_flant5xl.yaml",
              f"{B2}/eval_heldin_heldout_blip2_flant5xl.yaml"]
TABLE3_DATASETS = ("scienceqa", "ocr_vqa", "ok_vqa", "aok_vqa")
FINETUNING = [f"{folder}/finetune_{d}_{m}.yaml" for folder in (IB, B2) for d in TABLE3_DATASETS
              for m in ("flant5xxl", "vicuna7b")]
PROJECTS = TRAINING + EVALUATION + FINETUNING
#: what this machine lacks: data files (and OCR-VQA's OCR file, which no annotation carries)
MISSING = re.compile(r"does not exist\.|uses OCR tokens but its annotations carry none")


def path_of(project: str) -> str:
    return package_path(f"configs/{project}")


@functools.lru_cache(maxsize=None)
def composed(project: str) -> Config:
    """A shipped project composed once for the module (read only)."""
    return Config(path_of(project), strict=False)


@pytest.mark.parametrize("project", PROJECTS)
def test_only_missing_files_stop_the_project(project):
    """`lavis-ib check`'s findings (training checks included) are all missing files."""
    cfg = composed(project)
    problems = [*cfg.problems, *config_problems(cfg, training=not cfg.run_cfg.evaluate_only)]
    assert [p for p in problems if not MISSING.search(p)] == []


# (table, training project or None, evaluation project, the paper's row)
ROWS = [
    ("fig4", None, f"{B2}/eval_heldin_heldout_blip2_flant5xl.yaml", "BLIP-2 zero-shot"),
    ("fig4", f"{IB}/multitask_plain_flant5xl.yaml", f"{IB}/eval_multitask_plain_flant5xl.yaml",
     "Multitask: train plain input, eval instruction"),
    ("fig4", f"{IB}/multitask_prefix_flant5xl.yaml", f"{IB}/eval_heldin_heldout_flant5xl.yaml",
     "Multitask: train dataset name, eval instruction"),
    ("fig4", f"{IB}/multitask_prefix_flant5xl.yaml", f"{IB}/eval_multitask_prefix_flant5xl.yaml",
     "Multitask: train dataset name, eval dataset name"),
    ("fig4", f"{IB}/instruction_tuning_flant5xl.yaml", f"{IB}/eval_heldin_heldout_flant5xl.yaml",
     "InstructBLIP: train instruction, eval instruction"),
    ("2", f"{IB}/multitask_plain_flant5xl.yaml", f"{IB}/eval_multitask_plain_flant5xl.yaml", None),
    ("2", f"{IB}/instruction_tuning_flant5xl.yaml", f"{IB}/eval_heldin_heldout_flant5xl.yaml",
     "InstructBLIP FlanT5XL"),
    ("2", f"{IB}/instruction_tuning_flant5xl_no_instruction_qformer.yaml",
     f"{IB}/eval_heldin_heldout_flant5xl_no_instruction_qformer.yaml",
     "FlanT5XL w/o instruction-aware visual features"),
    ("2", f"{IB}/instruction_tuning_flant5xl_no_balancing.yaml",
     f"{IB}/eval_heldin_heldout_flant5xl.yaml", "FlanT5XL w/o data balancing"),
    ("2", f"{IB}/instruction_tuning_vicuna7b.yaml", f"{IB}/eval_heldin_heldout_vicuna7b.yaml",
     "InstructBLIP Vicuna-7B"),
    ("2", f"{IB}/instruction_tuning_vicuna7b_no_instruction_qformer.yaml",
     f"{IB}/eval_heldin_heldout_vicuna7b_no_instruction_qformer.yaml",
     "Vicuna-7B w/o instruction-aware visual features"),
    ("2", f"{IB}/instruction_tuning_vicuna7b_no_balancing.yaml",
     f"{IB}/eval_heldin_heldout_vicuna7b.yaml", "Vicuna-7B w/o data balancing"),
] + [("3", p, p, row) for folder, model, row in (
    (IB, "flant5xxl", "InstructBLIP FlanT5XXL"), (IB, "vicuna7b", "InstructBLIP Vicuna-7B"),
    (B2, "flant5xxl", "BLIP-2 FlanT5XXL"), (B2, "vicuna7b", "BLIP-2 Vicuna-7B"))
    for p in [f"{folder}/finetune_{d}_{model}.yaml" for d in TABLE3_DATASETS]]


@pytest.mark.parametrize("table,trained,evaluated,row", ROWS)
def test_runs_of_the_projects_land_in_the_papers_rows(tmp_path, table, trained, evaluated, row):
    """The run folders as training and `evaluate --checkpoint RUN --options
    run.output_dir=RUN` leave them (the configs the runner saves), read by the report."""
    if trained is None:
        folder = tmp_path / "evaluation"
    else:
        composed(trained).save(str(tmp_path / "run"))
        (tmp_path / "run" / "checkpoints").mkdir()
        folder = tmp_path / "run" / "eval" / "evaluation"
    composed(evaluated).save(str(folder))
    assert match_row(table, run_settings(str(folder))) == row


@pytest.mark.parametrize("evaluated,row", [
    (f"{IB}/eval_multitask_plain_flant5xl.yaml", "Multitask: train plain input, eval instruction"),
    (f"{IB}/eval_multitask_prefix_flant5xl.yaml", "Multitask: train dataset name, eval dataset name")])
def test_multitask_evaluations_outside_their_run_keep_their_row(tmp_path, evaluated, row):
    """Evaluated into a folder of their own, the multitask evaluations still say how the
    model was trained."""
    composed(evaluated).save(str(tmp_path))
    assert match_row("fig4", run_settings(str(tmp_path))) == row


def _measures(table):
    for spec in MEASURES[table].values():
        yield from (spec.parts if isinstance(spec, Mean) else (spec,))


def _evaluated(project):
    cfg = composed(project)
    return {(name, split) for name, entry in cfg.datasets_cfg.items() if entry.get("task")
            for split in (entry.get("eval_splits") or [])}


@pytest.mark.parametrize("project", EVALUATION)
def test_evaluations_give_every_column_of_table2_and_figure4(project):
    evaluated = _evaluated(project)
    for table in ("2", "fig4"):
        for m in _measures(table):
            assert any(name == m.dataset and (not m.splits or split in m.splits)
                       for name, split in evaluated), (table, m)
    # held-in COCO on Karpathy test; VizWiz val scored here, test-dev for its server
    assert {("coco_caption", "test"), ("vizwiz_vqa", "val"), ("vizwiz_vqa", "test")} <= evaluated


# Table 3's splits as the paper reports them (v2, Sec. 3.5, Table 3)
TABLE3_SPLITS = {"scienceqa": {("scienceqa", "test")}, "ocr_vqa": {("ocr_vqa", "test")},
                 "ok_vqa": {("ok_vqa", "val")},
                 "aok_vqa": {("aok_vqa", "val"), ("aok_vqa", "test"), ("aok_vqa_mc", "val"),
                             ("aok_vqa_mc", "test")}}


@pytest.mark.parametrize("project", FINETUNING)
def test_finetuning_evaluates_the_papers_splits_from_the_papers_start(project):
    dataset = next(d for d in TABLE3_DATASETS if f"finetune_{d}_" in project)
    assert TABLE3_SPLITS[dataset] <= _evaluated(project)
    cfg = composed(project)
    model, run = cfg.model_cfg, cfg.run_cfg
    assert model.vision.image_size == 224 and model.freeze_vit
    assert list(run.valid_splits) == ["val"] and list(run.select_metric) == [f"{dataset}.acc"]
    if dataset == "aok_vqa":   # multiple choice is evaluated, never trained on
        assert cfg.datasets_cfg.aok_vqa_mc.sample_ratio == 0
    if model.arch == "instructblip":   # the instruction-tuned model, released weights
        assert model.pretrained == f"Salesforce/instructblip-{'flan-t5-xxl' if 'xxl' in project else 'vicuna-7b'}"
    elif model.arch == "blip2_t5":
        assert model.pretrained == "Salesforce/blip2-flan-t5-xxl"
    else:
        assert model.checkpoint.endswith("blip2_pretrained_vicuna7b.pth")


@pytest.mark.parametrize("project", [p for p in PROJECTS if p.startswith(B2)])
def test_blip2_rows_decode_as_instructblip(project):
    """BLIP-2 baselines generate with InstructBLIP's settings (repetition penalty 1.5, the
    dataset defaults otherwise), not a BLIP-2 model's own, so a row differs in the model."""
    from lavis_ib.common.registry import registry

    cfg = composed(project)
    model_cls = registry.get_model_class(cfg.model_cfg.arch)
    family = "flant5" if "flant5" in cfg.model_cfg.model_type else "vicuna"
    generating = 0
    for name, entry in cfg.datasets_cfg.items():
        task = registry.get_task_class(entry.task).for_dataset(name, entry, model_cls=model_cls)
        if task.inference == "generate":
            generating += 1
            settings = task.eval_settings.generate_kwargs(family)
            assert settings["repetition_penalty"] == 1.5, name
            short = name not in ("coco_caption", "textcaps")
            assert settings["max_length"] == (10 if short else 80), name
            assert settings["length_penalty"] == ((-1 if family == "flant5" else 0) if short else 1)
    assert generating or "scienceqa" in project


def _composed(project):
    return OmegaConf.to_container(composed(project).config, resolve=False)


def test_multitask_arms_train_as_instruction_tuning_does():
    """Figure 4's arms differ from instruction tuning only in the training text, the
    validation prompts, the output folder and the LLaVA parts (left out)."""
    base = _composed(f"{IB}/instruction_tuning_flant5xl.yaml")
    for arm, fmt in (("plain", "plain"), ("prefix", "dataset_prefix")):
        cfg = _composed(f"{IB}/multitask_{arm}_flant5xl.yaml")
        assert cfg["model"] == base["model"]
        assert {k: v for k, v in cfg["run"].items() if k != "output_dir"} == \
            {k: v for k, v in base["run"].items() if k != "output_dir"}
        assert sorted(cfg["datasets"]) == sorted(d for d in base["datasets"] if not d.startswith("llava"))
        for name, entry in cfg["datasets"].items():
            assert entry["text_processor"]["train"]["format"] == fmt, name
            ours = {k: v for k, v in entry.items() if k not in ("text_processor", "prompt")}
            theirs = {k: v for k, v in base["datasets"][name].items() if k not in ("text_processor", "prompt")}
            assert ours == theirs, name


@pytest.mark.parametrize("arm,evaluation", [("plain", "eval_multitask_plain_flant5xl"),
                                            ("prefix", "eval_multitask_prefix_flant5xl")])
def test_held_in_evaluation_prompts_are_what_the_paper_says(arm, evaluation):
    """The prefixed arm's held-in datasets are prompted with exactly the text it trained
    on; the vanilla arm's captioning too (the image alone), its questions with the
    instruction (evaluated with instructions)."""
    from lavis_ib.common.prompts import fill_placeholders

    trained = composed(f"{IB}/multitask_{arm}_flant5xl.yaml").datasets_cfg
    evaluated = composed(f"{IB}/{evaluation}.yaml").datasets_cfg
    question, tokens = "What is the man holding?", "STOP, sign"
    for name in ("coco_caption", "textcaps", "ok_vqa", "aok_vqa"):
        proc = build_processors(trained[name].text_processor)["train"]
        for prompt in (evaluated[name].prompt, trained[name].prompt):   # evaluation, validation
            if name in ("ok_vqa", "aok_vqa"):
                # the eval task fills {} with the normalised question, as training does
                filled = fill_placeholders(prompt, [question.lower()])
                expected = proc(question=question) if arm == "prefix" else \
                    "Question: what is the man holding? Short answer:"
                assert filled == expected, name
            elif name == "coco_caption":
                assert prompt == proc(), name
            else:   # TextCaps: "OCR tokens: ... . " + the instruction (FlanT5 drops the end space)
                assert fill_placeholders(prompt, [tokens]) == f"OCR tokens: {tokens}. {proc()}".strip()


# -- a tiny variant of Figure 4's prefixed arm: train, evaluate into the run, report ----------
HELD_IN_TRAINING = ("coco_caption", "capfilt14m", "textcaps", "coco_vqa", "ok_vqa", "aok_vqa",
                    "ocr_vqa", "coco_vqg", "ok_vqg", "aok_vqg")
SMALL = {"train": {"name": "blip_image_train", "image_size": 32},
         "eval": {"name": "blip_image_eval", "image_size": 32}}
SHORT = {"num_beams": 1, "max_length": 4, "min_length": 1}
CAPTIONS = ("coco_caption", "textcaps")


def tiny_entries(fixtures, names):
    entries = {}
    for name in names:
        entry = dict(fixtures[name], vis_processor=SMALL)
        if name == "ivqa":
            entry["vis_processor"] = {"eval": {"name": "video_eval", "image_size": 32, "n_frms": 2}}
        if name in CAPTIONS:
            entry["metric"] = "bleu_cider"        # no METEOR (Java) in a test
        entries[name] = entry
    return entries


@pytest.mark.integration
def test_tiny_prefixed_arm_trains_evaluates_and_reports(fixture_root, tmp_path, capsys):
    from lavis_ib.cli.evaluate import main as evaluate
    from lavis_ib.cli.report import main as report
    from lavis_ib.cli.train import main as train

    fixtures, run = fixture_root.overrides, tmp_path / "run"
    train_yaml, eval_yaml = tmp_path / "tiny_prefix.yaml", tmp_path / "tiny_prefix_eval.yaml"
    train_yaml.write_text(yaml.safe_dump({
        "includes": [path_of(f"{IB}/multitask_prefix_flant5xl.yaml")],
        "model": {"model_type": "tiny_flant5", "vit_weights": None, "llm_model": None,
                  "init_from": [], "allow_random_init": True},
        "datasets": tiny_entries(fixtures, HELD_IN_TRAINING),
        "run": {"max_iters": 2, "val_every": 0, "global_batch_size": 4, "batch_size_train": 4,
                "warmup_steps": 1, "distributed": "none", "amp": "none", "device": "cpu",
                "num_workers": 0, "resume": "none", "dist_timeout_s": 60,
                "output_dir": str(run)}}))
    evaluation = OmegaConf.load(path_of(f"{IB}/eval_multitask_prefix_flant5xl.yaml"))
    eval_entries = tiny_entries(fixtures, list(evaluation.datasets))
    for name, entry in eval_entries.items():
        if composed(f"{IB}/eval_multitask_prefix_flant5xl.yaml").datasets_cfg[name].get("inference") == "generate":
            entry["generate"] = SHORT
    eval_yaml.write_text(yaml.safe_dump({
        "includes": [path_of(f"{IB}/eval_multitask_prefix_flant5xl.yaml")],
        "model": {"model_type": "tiny_flant5"}, "datasets": eval_entries,
        "run": {"batch_size_eval": 4, "num_workers": 0, "amp": "none", "device": "cpu"}}))

    assert train(["--cfg-path", str(train_yaml)]) == 0
    assert evaluate(["--cfg-path", str(eval_yaml), "--checkpoint", str(run),
                     "--options", f"run.output_dir={run}"]) == 0
    folder = run / "eval" / "tiny_prefix_eval"
    settings = run_settings(str(folder))
    assert (settings["train_format"], settings["eval_format"]) == ("dataset_prefix", "dataset_prefix")
    # VizWiz: val scored here, test-dev written for its server
    assert "acc" in json.loads((folder / "eval" / "vizwiz_vqa_val" / "metrics.json").read_text())
    submitted = json.loads((folder / "eval" / "submissions" / "vizwiz_vqa_test.json").read_text())
    assert [sorted(e) for e in submitted] == [["answer", "image"]] * 2
    capsys.readouterr()
    assert report([str(run), "--table", "fig4", "--row",
                   "Multitask: train dataset name, eval dataset name"]) == 0
    out = capsys.readouterr().out
    ours = next(line for line in out.splitlines() if line.startswith("| ours: run"))
    cells = [c.strip() for c in ours.strip("|").split("|")][1:]
    assert len(cells) == 2 and all(re.fullmatch(r"\d+\.\d", c) for c in cells), ours

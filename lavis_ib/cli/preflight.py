"""Pre-flight checks: everything a project can be checked for before any model weight or
dataset is loaded, so a typo costs seconds instead of the hours to the first validation.

All problems come back in one `ConfigError`, one line each; `lavis-ib check` runs only this,
`train` and `evaluate` run it first. Layers above `common` are imported inside functions."""
from __future__ import annotations

from typing import Any, Collection, Mapping, Sequence

from lavis_ib.common.config import Config, builder_name
from lavis_ib.common.project_files import raise_problems
from lavis_ib.common.containers import to_plain
from lavis_ib.common.errors import LavisIbError
from lavis_ib.common.registry import registry
from lavis_ib.models.config import model_problems


def checked_config(cfg_path: str, options: Sequence[str] | None = None,
                   training: bool = True) -> Config:
    """The composed project, after every pre-flight check passed.

    The project is composed with its composition problems kept (not raised one by one),
    and these are added:

    - run settings outside their range (`common/schema.py`), model settings outside theirs
      (`models/config.py`);
    - the registered names the run uses (task, runner, LR schedule) and each dataset's
      builder and processors;
    - every annotation file, media folder, OCR file and answer list a dataset needs
      (`BaseDatasetBuilder.check_files`: nothing is read or downloaded);
    - each dataset's evaluation settings as its task reads them, `generate` keys against the
      model class's `generation_settings()` and their values against their ranges
      (`models/generation.py`), and a candidate source for ranking;
    - `run.select_metric` against the metric names each validated dataset's task produces;
    - `sample_ratio` values (0: evaluated only, `datasets/mixing.py`'s rule) and, for
      training, at least one dataset to train on;
    - for training, the run folder (`runners/run_folder.py`): another run's live lock, a new
      run into a folder holding checkpoints, the checkpoint to resume and the settings a
      resume must keep (batch, LR, datasets, schedule), so none of these waits for a model.

    Args:
        training: check what training reads too (`run.select_metric`); False for
            `evaluate`, which never selects a checkpoint by metric.

    Raises:
        ConfigError: every problem found, together (a YAML syntax error, a missing
            project file or a plugin that does not import stops earlier, alone).
    """
    cfg = Config(cfg_path, options, strict=False)
    raise_problems(cfg_path, [*cfg.problems, *config_problems(cfg, training)])
    return cfg


def _attempt(problems: list[str], check: Any, *args: Any) -> Any:
    try:
        return check(*args)
    except LavisIbError as exc:
        problems.append(str(exc))
        return None


def config_problems(cfg: Config, training: bool = True) -> list[str]:
    """The pre-flight problems of a composed config (parts that failed to compose are
    skipped: their problem is already in `cfg.problems`)."""
    config, out = cfg.config, []
    model = config.get("model")
    model_cls = None
    if model is not None:
        from lavis_ib.models.llm.options import llm_option_problems

        out += model_problems(to_plain(model))
        out += llm_option_problems(to_plain(model), to_plain(config.get("run")))
        model_cls = _attempt(out, registry.get_model_class, str(model.arch))
    run = config.get("run")
    if run is not None:
        for key, lookup in (("task", registry.get_task_class), ("runner", registry.get_runner_class),
                            ("lr_sched", registry.get_lr_scheduler_class)):
            if _attempt(out, lookup, str(run[key])) is None:
                out[-1] = f"run.{key}: {out[-1]}"
    tasks = {}
    for name, entry in (config.get("datasets") or {}).items():
        out += dataset_problems(str(name), entry)
        task = _attempt(out, eval_task, str(name), entry, model_cls)
        if task is not None:
            tasks[str(name)] = task
            out += _candidate_problems(str(name), entry, task)
            out += generate_range_problems(str(name), task)
    if training and run is not None and not run.evaluate_only:
        out += _mixture_problems(run, config.get("datasets") or {}, cfg.failed_datasets)
        if run.val_every > 0:
            out += select_metric_problems(run, config.get("datasets") or {}, tasks,
                                          failed=cfg.failed_datasets)
        # a dataset that did not compose would read as a changed dataset list
        out += run_folder_problems(run, None if cfg.problems else config.get("datasets") or {})
    return out


def run_folder_problems(run: Any, datasets: Mapping[str, Any] | None) -> list[str]:
    """What training would refuse about `run.output_dir` (another run's lock, another
    run's checkpoints, the resume's checkpoint and settings), found before building."""
    import os

    from lavis_ib.runners.run_folder import folder_problems

    world = 1   # ddp/fsdp: the world is known under torchrun only (`check` does not know it)
    if run.distributed != "none":
        world = int(os.environ["WORLD_SIZE"]) if "WORLD_SIZE" in os.environ else None
    return folder_problems(run, datasets, world)


def dataset_problems(name: str, entry: Any) -> list[str]:
    """Builder, processors, sample_ratio and the files of dataset entry `name`."""
    out: list[str] = []
    builder_cls = _attempt(out, registry.get_builder_class, builder_name(name, entry))
    if builder_cls is None:
        return out
    for group in ("vis_processor", "text_processor"):
        for split, node in (entry.get(group) or {}).items():
            if node is not None and node.get("name") is not None:
                if _attempt(out, registry.get_processor_class, str(node.name)) is None:
                    out[-1] = f"datasets.{name}.{group}.{split}: {out[-1]}"
    from lavis_ib.datasets.mixing import check_sample_ratio

    _attempt(out, check_sample_ratio, name, entry.get("sample_ratio", 1.0))
    out += [f"datasets.{name}: {p}" for p in _attempt(out, _files, builder_cls, entry) or ()]
    return out


def _files(builder_cls: type, entry: Any) -> list[str]:
    return builder_cls(entry).check_files()


def eval_task(name: str, entry: Any, model_cls: type | None) -> Any:
    """The evaluation task of entry `name` built from its settings (None without a
    `task`); its checks run here, `generate` against `model_cls.generation_settings()`."""
    from lavis_ib.tasks.eval_task import EvalTask

    task_name = entry.get("task")
    if not task_name:
        return None
    task_cls = registry.get_task_class(str(task_name))
    if not issubclass(task_cls, EvalTask):
        return None   # a training task named on a dataset: evaluation never reads it
    return task_cls.for_dataset(name, entry, model_cls)


def generate_range_problems(name: str, task: Any) -> list[str]:
    """The `generate` values of entry `name` outside their range (`num_beams: 0`,
    `max_length: 0`, ...), by the one range check of `models/generation.py`; a per-family
    value is checked for each family it names."""
    from lavis_ib.models.generation import range_problems

    settings = getattr(task, "eval_settings", None)
    generate = to_plain(getattr(settings, "generate", None)) if settings is not None else None
    if getattr(settings, "inference", None) != "generate" or not isinstance(generate, Mapping):
        return []
    families = sorted({str(f) for v in generate.values() if isinstance(v, Mapping) for f in v})
    out = []
    for family in families or [None]:
        values = {k: (v.get(family) if isinstance(v, Mapping) else v) for k, v in generate.items()}
        values = {k: v for k, v in values.items()
                  if not (isinstance(generate[k], Mapping) and family not in generate[k])}
        path = {k: f"datasets.{name}.generate.{k}" + (f".{family}" if isinstance(generate[k], Mapping)
                                                      else "") for k in values}
        out += [f"{p}." for p in range_problems(values, lambda k: f"{path[k]}={values[k]!r}")]
    return list(dict.fromkeys(out))


def _candidate_problems(name: str, entry: Any, task: Any) -> list[str]:
    """Ranking over `answer_list` needs a dataset class with a vocabulary and a file to
    read it from (build_info.answer_list, or the train annotations it is derived from)."""
    settings = task.eval_settings
    if settings.inference != "rank" or settings.candidates != "answer_list":
        return []
    builder_cls = registry.get_builder_class(builder_name(name, entry))
    eval_cls = builder_cls.eval_dataset_cls
    info = entry.get("build_info") or {}
    if eval_cls is None or not isinstance(getattr(eval_cls, "answer_list", None), property):
        return [f"datasets.{name}: inference 'rank' with candidates: answer_list, but its dataset "
                f"class has no answer vocabulary; give the candidates as a list of strings."]
    if info.get("answer_list") is None and (info.get("annotations") or {}).get("train") is None:
        return [f"datasets.{name}: candidates: answer_list needs build_info.answer_list (or a "
                f"train split to derive the vocabulary from); neither is set."]
    return []


def _validated_splits(entry: Any, valid: list[str]) -> list[str] | None:
    """The splits of `valid` that training validation would evaluate, from the entry's
    `build_info.annotations` (None: a builder of its own layout, splits unknown here)."""
    annotations = (entry.get("build_info") or {}).get("annotations")
    if annotations is None:
        return None
    splits = list(annotations)
    wanted = entry.get("eval_splits")
    if wanted is not None:
        splits = [s for s in ([wanted] if isinstance(wanted, str) else list(wanted)) if s in splits]
    return [s for s in splits if s in valid]


def _mixture_problems(run: Any, datasets: Mapping[str, Any], failed: Collection[str]) -> list[str]:
    """Training needs a dataset with a train split and a sample_ratio above 0 (the mixer's
    rule, found here before the model is built; unknown while an entry failed to compose)."""
    trained = {}
    for name, entry in datasets.items():
        annotations = (entry.get("build_info") or {}).get("annotations")   # None: own layout
        if annotations is None or any(annotations.get(s) is not None for s in run.train_splits):
            trained[name] = entry.get("sample_ratio", 1.0)
    if trained and not failed and all(r == 0 for r in trained.values()):
        return [f"every training dataset has sample_ratio 0 ({', '.join(map(str, trained))}): "
                f"give at least one a positive ratio, or set run.evaluate_only."]
    return []


def select_metric_problems(run: Any, datasets: Mapping[str, Any], tasks: Mapping[str, Any],
                           failed: Collection[str] = ()) -> list[str]:
    """Each `dataset.metric` of run.select_metric names a validated dataset and a metric
    its task produces (a dataset in `failed`, whose entry did not compose, is skipped:
    its problem is reported already)."""
    out = []
    valid = list(run.valid_splits)
    validated = [n for n, e in datasets.items()
                 if e.get("task") and _validated_splits(e, valid) != []]   # None: unknown, kept
    for item in run.select_metric:
        name, _, metric = str(item).partition(".")
        if name in failed:
            continue
        if name not in validated:
            out.append(f"run.select_metric '{item}': dataset '{name}' is not validated in this "
                       f"project (it needs a task and a {valid} split not excluded by "
                       f"eval_splits); validated: {', '.join(map(str, validated)) or '(none)'}.")
            continue
        names = tasks[name].metric_names() if name in tasks else None
        if names is not None and metric not in names:
            from lavis_ib.common.errors import did_you_mean

            out.append(f"run.select_metric '{item}': the {datasets[name].task} task of '{name}' "
                       f"produces {', '.join(sorted(names))}.{did_you_mean(metric, names)}")
    return out

"""Which of our numbers stands beside which of the paper's: each table column's measure
(a dataset's `metrics.json` key, or the mean of several, from `<RUN>/eval/<dataset>_<split>/`)
and the paper row a run matches, from its saved `config.yaml`.

Kept apart from the printing (`compare`), so the pairing rules can be read and tested alone."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Sequence, Union

from lavis_ib.common.errors import DataError
from lavis_ib.report.paper import HELD_OUT, METRIC, ROW_OF_MODEL_TYPE, TABLES

SPLIT_PREFERENCE = ("test", "testdev", "test_dev", "val")


@dataclass(frozen=True)
class Measure:
    """One number of a run: `metric` of `<dataset>_<split>/metrics.json`, the first of
    `splits` found (empty: `SPLIT_PREFERENCE`, then any other split)."""

    dataset: str
    metric: str
    splits: tuple[str, ...] = ()

    def describe(self) -> str:
        where = "|".join(self.splits) if self.splits else "test, else val"
        return f"{self.dataset}.{self.metric} ({where})"


@dataclass(frozen=True)
class Mean:
    """The mean of several measures, only when all are there: a held-in average missing
    TextCaps is no average, and the report says which part is missing."""

    parts: tuple[Measure, ...]

    def describe(self) -> str:
        return "mean of " + ", ".join(p.describe() for p in self.parts)


Spec = Union[Measure, Mean]

#: The held-in datasets Table 2 averages (its caption); Figure 4's held-in average too.
HELD_IN_AVG = Mean((Measure("coco_caption", "cider"), Measure("ok_vqa", "acc"),
                    Measure("aok_vqa", "acc"), Measure("textcaps", "cider")))
#: Figure 4's held-out average (its text lists these eight).
FIG4_HELD_OUT = ("gqa", "textvqa", "vsr", "hateful_memes", "iconqa", "scienceqa", "ivqa",
                 "vizwiz_vqa")

MEASURES: dict[str, dict[str, Spec]] = {
    "1": {d: Measure(d, METRIC[d]) for d in HELD_OUT},
    "2": {"heldin_avg": HELD_IN_AVG,
          **{d: Measure(d, METRIC[d])
             for d in ("gqa", "scienceqa", "iconqa", "vizwiz_vqa", "ivqa")}},
    "3": {"scienceqa": Measure("scienceqa", "acc", ("test", "val")),
          "ocr_vqa": Measure("ocr_vqa", "acc", ("test", "val")),
          "ok_vqa": Measure("ok_vqa", "acc", ("test", "val")),
          "aokvqa_da_val": Measure("aok_vqa", "acc", ("val",)),
          "aokvqa_da_test": Measure("aok_vqa", "acc", ("test",)),
          "aokvqa_mc_val": Measure("aok_vqa_mc", "acc", ("val",)),
          "aokvqa_mc_test": Measure("aok_vqa_mc", "acc", ("test",))},
    "fig4": {"heldin_avg": HELD_IN_AVG,
             "heldout_avg": Mean(tuple(Measure(d, METRIC[d]) for d in FIG4_HELD_OUT))},
}


def _datasets() -> set[str]:
    names = set(HELD_OUT)
    for specs in MEASURES.values():
        for spec in specs.values():
            names.update(p.dataset for p in (spec.parts if isinstance(spec, Mean) else (spec,)))
    return names


#: Every dataset a table reads: `<a>_<split>` is never taken for a longer name's folder.
KNOWN_DATASETS = frozenset(_datasets())


def find_split(eval_dir: str, dataset: str, splits: Sequence[str] = (),
               others: Sequence[str] = KNOWN_DATASETS) -> tuple[str | None, str | None]:
    """(split, metrics.json path) of `dataset` under `eval_dir`: the first of `splits`
    found, or without `splits` the first of `SPLIT_PREFERENCE`, then any; a split scored
    by a server (`server_split`) is passed over. A folder of a longer dataset name in
    `others` (aok_vqa_mc_val for aok_vqa) is never taken."""
    if not os.path.isdir(eval_dir):
        return None, None
    found = {}
    for entry in os.listdir(eval_dir):
        path = os.path.join(eval_dir, entry, "metrics.json")
        if entry.startswith(dataset + "_") and os.path.isfile(path):
            split = entry[len(dataset) + 1:]
            if split and not any(entry.startswith(other + "_") and len(other) > len(dataset)
                                 for other in others):
                found[split] = path
    order = list(splits) if splits else [s for s in SPLIT_PREFERENCE if s in found] + sorted(found)
    for split in order:
        if split in found and not server_split(found[split]):
            return split, found[split]
    return None, None


def server_split(path: str) -> bool:
    """A split evaluated without answers (its server scores it: tasks/submissions.py);
    its metrics.json has no number to report, so the next split is read."""
    from lavis_ib.tasks.submissions import scored_by_server

    try:
        with open(path) as f:
            return scored_by_server(json.load(f))
    except (OSError, ValueError):
        return False   # read_metric names the unreadable file


def read_metric(path: str, key: str) -> float | None:
    """`key` of a metrics.json (None when absent or not a finite number)."""
    try:
        with open(path) as f:
            metrics = json.load(f)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    value = metrics.get(key) if isinstance(metrics, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


@dataclass
class Value:
    """A run's number for one column: `value` (None: not there), `read` (the folders it
    came from) and `missing` (the parts not found)."""

    value: float | None
    read: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _measure(eval_dir: str, m: Measure) -> tuple[float | None, str | None]:
    split, path = find_split(eval_dir, m.dataset, m.splits)
    if path is None:
        return None, None
    return read_metric(path, m.metric), f"{m.dataset}_{split}"


def value_of(eval_dir: str, spec: Spec) -> Value:
    """Our number for a column spec (a mean only when every part is found)."""
    out = Value(None)
    parts = spec.parts if isinstance(spec, Mean) else (spec,)
    values = []
    for part in parts:
        value, entry = _measure(eval_dir, part)
        if value is None:
            out.missing.append(f"{part.dataset}.{part.metric}")
        else:
            values.append(value)
            out.read.append(entry)
    if not out.missing:
        out.value = sum(values) / len(values)
    return out


# -- rows ---------------------------------------------------------------------------------
_T2_FAMILY = {"flant5xl": "FlanT5XL", "vicuna7b": "Vicuna-7B"}
_T3_ROWS = {("instructblip", "flant5xxl"): "InstructBLIP FlanT5XXL",
            ("instructblip", "vicuna7b"): "InstructBLIP Vicuna-7B",
            ("blip2_t5", "pretrain_flant5xxl"): "BLIP-2 FlanT5XXL",
            ("blip2_llm", "vicuna7b"): "BLIP-2 Vicuna-7B"}
#: Figure 4's InstructBLIP FlanT5XL rows by (training format, identifiers in the prompts)
_FIG4_ROWS = {("instruction", False): "InstructBLIP: train instruction, eval instruction",
              ("plain", False): "Multitask: train plain input, eval instruction",
              ("dataset_prefix", False): "Multitask: train dataset name, eval instruction",
              ("dataset_prefix", True): "Multitask: train dataset name, eval dataset name"}


def training_run(folder: str) -> str | None:
    """The training run an evaluation folder lies in (`<run>/eval/<name>/`, the run holding
    `checkpoints/`, runners/run_folder.py), or None."""
    parent = os.path.dirname(os.path.abspath(folder))
    run = os.path.dirname(parent)
    if os.path.basename(parent) == "eval" and os.path.isdir(os.path.join(run, "checkpoints")) \
            and os.path.isfile(os.path.join(run, "config.yaml")):
        return run
    return None


def train_format(cfg: Any) -> str:
    """The training-text format of a config's templated training sets (`instruction_template`'s
    `format`, docs/protocol.md "Paper experiments"; datasets with no split in
    `run.train_splits`, such as held-out ones, do not count): one of its FORMATS, or "mixed"."""
    from omegaconf import OmegaConf

    formats = set()
    train_splits = list(OmegaConf.select(cfg, "run.train_splits") or ["train"])
    for entry in (OmegaConf.select(cfg, "datasets") or {}).values():
        if entry is None:
            continue
        annotations = OmegaConf.select(entry, "build_info.annotations") or {}
        proc = OmegaConf.select(entry, "text_processor.train")
        if proc is not None and proc.get("name") == "instruction_template" and \
                any(annotations.get(split) is not None for split in train_splits):
            formats.add(str(proc.get("format") or "instruction"))
    if len(formats) > 1:
        return "mixed"
    return formats.pop() if formats else "instruction"


def eval_format(cfg: Any) -> str:
    """"dataset_prefix" when an evaluated dataset's prompt names its task with a
    ``[Task:Dataset]`` / ``[Task]`` identifier, else "instruction"."""
    from omegaconf import OmegaConf

    from lavis_ib.processors.templates import IDENTIFIER

    for entry in (OmegaConf.select(cfg, "datasets") or {}).values():
        prompt = entry.get("prompt") if entry is not None else None
        if isinstance(prompt, str) and IDENTIFIER.search(prompt):
            return "dataset_prefix"
    return "instruction"


def run_settings(run_dir: str) -> dict[str, Any]:
    """What row matching reads (all None without a config.yaml): the evaluated model and
    prompts from `<run_dir>/config.yaml`; how the model was trained (balanced sampling, the
    training-text format) from the training run's config.yaml when `run_dir` is an
    evaluation inside one (`training_run`), else from the same file."""
    from omegaconf import OmegaConf

    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        return {"arch": None, "model_type": None, "qformer_text_input": None,
                "balanced_sampling": None, "train_format": None, "eval_format": None}
    cfg = OmegaConf.load(path)
    run = training_run(run_dir)
    trained = OmegaConf.load(os.path.join(run, "config.yaml")) if run else cfg
    return {"arch": OmegaConf.select(cfg, "model.arch"),
            "model_type": OmegaConf.select(cfg, "model.model_type"),
            "qformer_text_input": OmegaConf.select(cfg, "model.qformer_text_input"),
            "balanced_sampling": OmegaConf.select(trained, "run.balanced_sampling"),
            "train_format": train_format(trained), "eval_format": eval_format(cfg)}


def match_row(table: str, settings: dict[str, Any]) -> str | None:
    """The paper row of `table` a run with these settings is an instance of, or None
    (then `--row` names it). Table 2 tells its ablations by `model.qformer_text_input`
    and `run.balanced_sampling` being false; Figure 4 its multitask arms by the training
    text's format and identifiers in the evaluation prompts (`train_format`,
    `eval_format`), and a multitask run is no InstructBLIP row of Tables 1 and 2."""
    arch, model_type = settings.get("arch"), settings.get("model_type")
    instruction_qformer = settings.get("qformer_text_input") is not False
    balanced = settings.get("balanced_sampling") is not False
    trained = settings.get("train_format") or "instruction"
    prefixed = settings.get("eval_format") == "dataset_prefix"
    if table == "1":
        return ROW_OF_MODEL_TYPE.get(model_type) if trained == "instruction" else None
    if table == "2":
        family = _T2_FAMILY.get(model_type) if arch == "instructblip" else None
        if family is None or trained != "instruction" or not (instruction_qformer or balanced):
            return None
        if not instruction_qformer:
            return f"{family} w/o instruction-aware visual features"
        return f"InstructBLIP {family}" if balanced else f"{family} w/o data balancing"
    if table == "3":
        return _T3_ROWS.get((arch, model_type))
    if table == "fig4":
        if (arch, model_type) == ("blip2_t5", "pretrain_flant5xl"):
            return "BLIP-2 zero-shot"
        if (arch, model_type) != ("instructblip", "flant5xl") or not (instruction_qformer
                                                                       and balanced):
            return None
        return _FIG4_ROWS.get((trained, prefixed))
    raise KeyError(f"no table '{table}' (tables: {', '.join(TABLES)})")

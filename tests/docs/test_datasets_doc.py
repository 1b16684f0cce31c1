"""docs/datasets.md: it names every registered dataset, every `build_info` key it documents
exists in a dataset YAML or the builder code, its layout paths are the defaults' storage
paths, and its example of switching between generation and ranking composes into the
evaluation settings it describes."""
from __future__ import annotations

import glob
import os
import re

import yaml

from docs_includes import REPO
from lavis_ib.common.config import Config
from lavis_ib.common.registry import registry
from lavis_ib.cli.preflight import eval_task

DOC = os.path.join(REPO, "docs", "datasets.md")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_names_every_registered_dataset_and_is_linked():
    doc = read(DOC)
    names = registry.list_datasets()
    assert len(names) == 29
    for name in names:
        assert f"| `{name}` |" in doc, f"docs/datasets.md has no row for {name}"
    assert "](datasets.md)" in read(os.path.join(REPO, "docs", "index.md"))


def test_documented_build_info_keys_exist():
    doc = read(DOC)
    keys = set(re.findall(r"build_info\.([a-z_]+)", doc))
    assert {"annotations", "images", "videos", "ocr", "answer_list"} <= keys
    yaml_keys = set()
    for path in glob.glob(os.path.join(REPO, "lavis_ib", "configs", "datasets", "*", "*.yaml")):
        for entry in yaml.safe_load(read(path))["datasets"].values():
            yaml_keys |= set(entry["build_info"])
    code = "\n".join(read(p) for p in glob.glob(os.path.join(REPO, "lavis_ib", "datasets", "builders", "*.py")))
    for key in keys:
        assert key in yaml_keys or f'"{key}"' in code or f"build_info.{key}" in code, key


def test_layout_paths_are_the_defaults_storage_paths():
    """Every storage path of every default YAML appears in the doc (brace-expanded rows
    such as `coco/annotations/coco_karpathy_{train,val,test}.json` count)."""
    doc = read(DOC)
    expanded = set()
    for span in re.findall(r"`([^`\s]+)`", doc):
        m = re.search(r"\{([a-z0-9,]+)\}", span)
        parts = m.group(1).split(",") if m and "," in m.group(1) else None
        expanded |= {span[:m.start()] + p + span[m.end():] for p in parts} if parts else {span}
    expanded |= {s.rstrip("/") for s in expanded}

    def storages(node):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from (storages(v) if k != "url" else ())
        elif isinstance(node, list):
            for v in node:
                yield from storages(v)
        elif isinstance(node, str):
            yield node
    for path in glob.glob(os.path.join(REPO, "lavis_ib", "configs", "datasets", "*", "defaults.yaml")):
        entry = next(iter(yaml.safe_load(read(path))["datasets"].values()))
        for storage in storages(entry["build_info"]):
            assert storage in expanded, f"{storage} ({os.path.basename(os.path.dirname(path))})"


def test_generation_ranking_switch_example_composes(tmp_path):
    block = re.search(r"```yaml\n(datasets:\n  msvd_qa:.*?)```", read(DOC), re.DOTALL).group(1)
    project = tmp_path / "switch.yaml"
    project.write_text("model: {arch: instructblip, model_type: tiny_vicuna}\n" + block)
    cfg = Config(str(project))
    model_cls = registry.get_model_class("instructblip")
    settings = {n: eval_task(n, e, model_cls).eval_settings for n, e in cfg.config.datasets.items()}
    assert settings["msvd_qa"].inference == "generate"
    assert settings["gqa"].inference == "rank"
    assert list(settings["gqa"].candidates) == ["yes", "no", "left", "right"]
    assert settings["ivqa"].inference == "rank" and settings["ivqa"].candidates == "answer_list"

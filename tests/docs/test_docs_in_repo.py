"""The repository documents itself: the architecture, protocol and model guides exist and
are linked from docs/index.md, the architecture page names every member of the model
contract (each of which `BaseModel` has), and no file points at a document outside the
repository."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from docs_includes import REPO

DOCS = ("docs/architecture.md", "docs/protocol.md", "docs/adding_a_model.md")
# The members tasks, runners and loaders may call on a model (issue 10, item 1).
CONTRACT = {"forward", "generate", "generation_settings", "score_candidates", "llm_family",
            "default_append_eos", "trainable_module_names", "trainable_parameters",
            "shard_units", "checkpoint_units", "save_pretrained", "preprocess_config",
            "from_config", "default_config_path", "inference_counts", "merge_adapters"}
# BaseModel members that are plumbing, not part of the contract other layers call
NOT_CONTRACT = {"PRETRAINED_MODEL_CONFIG_DICT", "device", "from_pretrained"}
# Names of documents that lived outside the repository; built from parts so that this
# file does not mention them itself.
OUTSIDE = [name + ".md" for name in ("CONTRACTS", "CONTRACT", "PAPER", "DESIGN", "STYLE",
                                     "MODELS-LAYOUT")] + ["../" + "shared"]
CHECKED = (".py", ".md", ".yaml", ".yml", ".cfg", ".toml", ".txt")
SKIP_DIRS = {"output", "build", "dist", "__pycache__"}


def read(path: str) -> str:
    with open(os.path.join(REPO, path)) as f:
        return f.read()


@pytest.mark.parametrize("doc", DOCS)
def test_doc_exists_and_is_linked_from_the_index(doc):
    assert len(read(doc).splitlines()) > 40, doc
    assert f"]({os.path.basename(doc)})" in read("docs/index.md"), doc


def contract_table() -> list[str]:
    """The member names in the first column of architecture.md's model-contract table."""
    text = read("docs/architecture.md")
    section = text.split("## The model contract", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE)


def test_architecture_names_every_model_contract_member_and_base_model_has_them():
    from lavis_ib.models import BaseModel

    named = contract_table()
    assert CONTRACT <= set(named), f"not in the table: {sorted(CONTRACT - set(named))}"
    missing = [name for name in named if not hasattr(BaseModel, name)]
    assert not missing, f"architecture.md names members BaseModel lacks: {missing}"
    declared = {k for k in vars(BaseModel) if not k.startswith("_")} - NOT_CONTRACT
    assert declared <= set(named), f"BaseModel members not documented: {declared - set(named)}"


def repo_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files (what a commit holds); without git (an
    unpacked archive), every file outside hidden and build folders."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                             cwd=REPO, capture_output=True, text=True, check=True).stdout
        paths = out.splitlines()
    except (OSError, subprocess.CalledProcessError):
        paths = []
        for root, dirs, files in os.walk(REPO):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS]
            paths += [os.path.relpath(os.path.join(root, f), REPO) for f in files]
    return [p for p in paths
            if (p.endswith(CHECKED) or os.path.basename(p) == "Makefile")
            and os.path.isfile(os.path.join(REPO, p))]


def test_no_file_refers_to_a_document_outside_the_repository():
    pattern = re.compile("|".join(re.escape(name) for name in OUTSIDE))
    found = []
    for path in repo_files():
        with open(os.path.join(REPO, path), errors="replace") as f:
            for number, line in enumerate(f, 1):
                if pattern.search(line):
                    found.append(f"{path}:{number}: {line.strip()[:100]}")
    assert not found, ("files refer to documents outside the repository (point at "
                       "docs/protocol.md or docs/architecture.md instead):\n" + "\n".join(found))


def test_the_reference_check_sees_the_repository():
    files = repo_files()
    assert "docs/protocol.md" in files and "Makefile" in files
    assert any(p.startswith("lavis_ib/") and p.endswith(".py") for p in files)
    assert any(p.endswith(".yaml") for p in files)

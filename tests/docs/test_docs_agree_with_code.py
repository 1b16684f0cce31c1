"""Statements of the docs that once disagreed with the code, each checked against the code:
no `+` for `model.llm_quantization`, where an evaluation writes, where `make` takes torch
from, the multiple-choice task's prompt fields, and the unknown-name error's pointer to
`plugins:`."""
from __future__ import annotations

import glob
import os
import re

import pytest
import yaml

from docs_includes import REPO
from docs_pages import pages, paragraphs, read

SHIPPED_PROJECT = "configs/projects/instructblip/instruction_tuning_vicuna7b.yaml"


def paragraph_texts(page: str) -> list[str]:
    lines = read(page).splitlines()
    return [" ".join(lines[start - 1:start - 1 + n]) for start, n in paragraphs(read(page))]


# -- `llm_quantization` is an existing model key: no `+` ---------------------------------------
def test_llm_quantization_is_overridden_without_plus():
    """Every shipped model YAML with an LLM (it names `llm_model`) lists the key, so an
    override needs no `+`; BLIP-2 stage 1 (`blip2`) has no LLM to quantise."""
    from lavis_ib.common.config import Config

    with_llm = 0
    for path in glob.glob(os.path.join(REPO, "lavis_ib", "configs", "models", "*", "*.yaml")):
        with open(path) as f:
            model = yaml.safe_load(f)["model"]
        if "llm_model" in model:
            with_llm += 1
            assert "llm_quantization" in model, path
        else:
            assert model["arch"] == "blip2", f"{path}: a model without llm_model that is not stage 1"
    assert with_llm > 20
    cfg = Config(os.path.join(REPO, SHIPPED_PROJECT), ["model.llm_quantization=int8_weight_only"])
    assert cfg.config.model.llm_quantization == "int8_weight_only"


def test_no_page_asks_for_plus_on_llm_quantization():
    for page in pages():
        text = read(page)
        assert "+model.llm_quantization" not in text, page
        for para in paragraph_texts(page):
            if "llm_quantization" in para and "`+`" in para:
                assert "without `+`" in para or "needs no `+`" in para, (page, para[:200])
    assert "without `+`" in read("docs/quantization.md")


# -- where an evaluation writes -----------------------------------------------------------------
def test_evaluation_folder_rule_as_documented(tmp_path):
    """The documented rule: `run.output_dir` itself, and `RUN/eval/<name>/` only when that
    folder is a training run's (it holds `checkpoints/`, a lock, a log or a training
    run_info.json)."""
    from types import SimpleNamespace

    from lavis_ib.runners.run_folder import RunFolder

    plain, run = tmp_path / "heldout", tmp_path / "run"
    plain.mkdir()
    (run / "checkpoints").mkdir(parents=True)

    def where(output_dir, name):   # the folder the runner's evaluation writes into
        return RunFolder(SimpleNamespace(output_dir=str(output_dir)), rank=0).evaluation_folder(name)

    assert where(plain, "zeroshot") == str(plain)
    assert where(run, "zeroshot") == str(run / "eval" / "zeroshot")

    doc = " ".join(read("docs/evaluation.md").split())
    assert ("An evaluation writes into its project's `run.output_dir`" in doc and
            "Only when its `run.output_dir` is a training run's folder (one holding "
            "`checkpoints/`, a run lock, a `log.jsonl` or a `run_info.json` recording a "
            "training batch" in doc and
            "does an evaluation write under `RUN/eval/<name>/` instead" in doc)
    assert "`<name>` is `--name`, by default the project file's name" in doc


def test_no_page_says_evaluating_a_run_always_writes_into_it():
    for page in pages():
        for para in paragraph_texts(page):
            if "RUN/eval/<name>/" in para:
                assert "`run.output_dir`" in para and "only when" in para.lower(), (page, para[:200])


# -- where `make` takes torch from ------------------------------------------------------------
WHERE_TORCH_COMES_FROM = "local wheels or the package index"


def test_makefile_and_docs_say_the_same_about_torch():
    makefile = read("Makefile")
    pins = re.search(r"^TORCH_PINS := (.+)$", makefile, re.MULTILINE).group(1).split()
    assert [p.split("==")[0] for p in pins] == ["torch", "torchvision"]
    recipe = makefile.split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
    assert recipe.index("$(TORCH_PINS)") < recipe.index('-e ".[test]"'), "torch first, then the package"
    comment = " ".join(line.lstrip("# ") for line in makefile.splitlines() if line.startswith("#"))
    assert WHERE_TORCH_COMES_FROM in " ".join(comment.split()) and "pinned" in comment
    for page in ("README.md", "docs/getting_started.md"):
        text = " ".join(read(page).split())
        for pin in pins:
            assert f"`{pin}`" in text, (page, pin)
        assert WHERE_TORCH_COMES_FROM in text and "first, pinned" in text, page


# -- the multiple-choice task's prompt fields ---------------------------------------------------
def outside_parentheses(text: str) -> str:
    """`text` without its parenthesised asides (nested ones included)."""
    depth, kept = 0, []
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and ch != ")":
            kept.append(ch)
    return "".join(kept)


def test_multiple_choice_docstring_names_its_prompt_fields():
    from lavis_ib.tasks.multiple_choice import MultipleChoiceTask

    doc = " ".join(MultipleChoiceTask.__doc__.split())
    listed = re.search(r"Prompt placeholders \(``PROMPT_FIELDS``, in order\): (.+?)\. A prompt", doc)
    assert listed, "the docstring's prompt-placeholder sentence is missing"
    assert tuple(re.findall(r"``(\w+)``", outside_parentheses(listed.group(1)))) == \
        MultipleChoiceTask.PROMPT_FIELDS
    assert "one the options alone" in doc


@pytest.mark.parametrize("prompt,expected", [
    ("C: {} Q: {} O: {}", "C: ctx Q: What  Is it? O: (a) red (b) blue"),
    ("Q: {} O: {}", "Q: What  Is it? O: (a) red (b) blue"),   # the last two: raw question, options
    ("O: {}", "O: (a) red (b) blue"),                         # the last one: the options alone
])
def test_multiple_choice_fills_the_last_n_fields(prompt, expected):
    from lavis_ib.tasks.multiple_choice import MultipleChoiceTask

    task = MultipleChoiceTask.for_dataset("iconqa", {"task": "multiple_choice", "inference": "rank",
                                                     "prompt": prompt})
    samples = {"question_id": [1], "question": ["What  Is it?"], "text_input": ["what is it?"],
               "context": ["ctx"], "choices": [["red", "blue"]]}
    assert task.prompts(samples) == [expected]


# -- an unknown name points at `plugins:` -------------------------------------------------------
def test_unknown_model_error_asks_about_plugins():
    from lavis_ib import load_model
    from lavis_ib.common.errors import RegistryError
    from lavis_ib.common.registry import registry

    with pytest.raises(RegistryError, match=r"Did you mean 'instructblip'\?.*is it defined in a "
                                            r"module listed under plugins:"):
        load_model("instructblib", "tiny_vicuna")
    with pytest.raises(RegistryError, match="module listed under plugins:"):
        registry.get_builder_class("my_own_vqa")

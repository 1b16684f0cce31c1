"""The pages cannot drift from the code: the example files are included verbatim in the
guides, and every command, config key, class, function, file, test, flag and environment
variable that README.md or a docs/*.md page names in inline code exists (keys in the
model's default YAML and config schema, functions by import or definition, files on disk,
tests and flags in the code or the tests)."""
from __future__ import annotations

import functools
import glob
import importlib
import importlib.util
import os
import re

import pytest

from docs_includes import GUIDES, REPO, find_includes
from docs_pages import pages

ALL_PAGES = tuple(pages())
SPAN = re.compile(r"(?<!`)`([^`]+)`(?!`)")
FENCE = re.compile(r"^```.*?^```\s*$", re.DOTALL | re.MULTILINE)
# parameter names (checked against the conversion functions by test_guide_checkpoints.py)
PARAM_PREFIXES = ("query_tokens", "visual_encoder.", "ln_vision.", "qformer.", "llm_proj.",
                  "llm.", "Qformer.", "vision_model.", "language_", "t5_proj.", "opt_proj",
                  "bert.")


# Spans that are not names of the code: deliberate misspellings shown next to the error
# they cause, the mixing formula's notation, and a hypothetical task setting.
MISSPELT = ("promt", "exact_mach", "sample_ration", "templat", "my_vq", "beams")
NOT_NAMES = {"N_d", "sqrt(N_d)", "threshold"}
BUILTINS = {"cls", "len", "dict", "list", "str", "int", "float", "bool", "type"}


def read(path: str) -> str:
    with open(os.path.join(REPO, path)) as f:
        return f.read()


def spans(guide: str) -> list[str]:
    """Inline code spans of a guide, outside fenced blocks."""
    return [" ".join(s.split()) for s in SPAN.findall(FENCE.sub("", read(guide)))]


_CORPUS: list[str] = []


def corpus() -> str:
    """The package's source, configs and the example files, as one text."""
    if not _CORPUS:
        files = glob.glob(os.path.join(REPO, "lavis_ib", "**", "*.py"), recursive=True)
        files += glob.glob(os.path.join(REPO, "lavis_ib", "configs", "**", "*.yaml"), recursive=True)
        files += glob.glob(os.path.join(REPO, "docs", "examples", "*"))
        _CORPUS.append("\n".join(open(f).read() for f in sorted(files) if os.path.isfile(f)))
    return _CORPUS[0]


_WIDE: list[str] = []


def wide_corpus() -> str:
    """The corpus plus the tests (tests/docs excepted: it names invented things on purpose),
    the benchmarks and the build files: where test names, flags, environment variables and
    pins live."""
    if not _WIDE:
        files = [f for f in glob.glob(os.path.join(REPO, "tests", "**", "*.py"), recursive=True)
                 if os.sep + os.path.join("tests", "docs") + os.sep not in f]
        files += glob.glob(os.path.join(REPO, "bench", "**", "*.py"), recursive=True)
        files += [os.path.join(REPO, n) for n in ("Makefile", "constraints.txt", "setup.cfg")]
        _WIDE.append(corpus() + "\n" + "\n".join(open(f).read() for f in sorted(files)
                                                 if os.path.isfile(f)))
    return _WIDE[0]


_WORDS: dict[int, set[str]] = {}


def in_corpus(word: str, text: str | None = None) -> bool:
    text = corpus() if text is None else text
    if re.fullmatch(r"\w+", word):   # a whole word: look it up among the text's words
        if id(text) not in _WORDS:
            _WORDS[id(text)] = set(re.findall(r"\w+", text))
        return word in _WORDS[id(text)]
    return re.search(r"(?<![\w])" + re.escape(word) + r"(?![\w])", text) is not None


def ours(path: str) -> bool:
    """A `.py` span names a file of this repository (not, say, a dataset's own script):
    under lavis_ib/ (also written from inside it: `models/llm/lora.py`), tests/, bench/,
    docs/, or a test file by its name."""
    first = path.split("/")[0]
    return first in ("lavis_ib", "tests", "bench", "docs") or path.startswith("test_") or \
        ("/" in path and os.path.isdir(os.path.join(REPO, "lavis_ib", first)))


def python_file(path: str) -> str | None:
    """The file a `.py` span names: relative to the repository or to lavis_ib/, or (a bare
    file name) the test or benchmark of that name."""
    for base in (REPO, os.path.join(REPO, "lavis_ib")):
        if os.path.isfile(os.path.join(base, path)):
            return os.path.join(base, path)
    if "/" not in path:
        found = glob.glob(os.path.join(REPO, "tests", "**", path), recursive=True) + \
            glob.glob(os.path.join(REPO, "bench", path))
        return found[0] if found else None
    return None


def resolve_dotted(name: str) -> bool:
    """`lavis_ib.a.b.attr` (or a module) exists."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            continue
        obj = importlib.import_module(module)
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@functools.lru_cache(maxsize=None)
def model_keys() -> frozenset[str]:
    from omegaconf import OmegaConf

    from lavis_ib.models.config import InstructBlipConfig

    KNOWN_KEYS = InstructBlipConfig.keys()

    keys = set()
    for path in glob.glob(os.path.join(REPO, "lavis_ib", "configs", "models", "instructblip", "*.yaml")):
        keys |= set(OmegaConf.load(path).model.keys())
    return frozenset(keys & set(KNOWN_KEYS))


@functools.lru_cache(maxsize=None)
def dataset_keys() -> frozenset[str]:
    from omegaconf import OmegaConf

    from lavis_ib.tasks.eval_settings import _BUILDER_KEYS, ALL_EVAL_KEYS

    keys = set(ALL_EVAL_KEYS) | set(_BUILDER_KEYS)
    for path in glob.glob(os.path.join(REPO, "lavis_ib", "configs", "datasets", "*", "*.yaml")):
        for entry in OmegaConf.load(path).datasets.values():
            keys |= set(entry.keys())
    return frozenset(keys)


TOP_LEVEL = ("model", "datasets", "run", "plugins")


def owner(name: str):
    """The object a `Name.attr` span refers to."""
    from lavis_ib import registry
    from lavis_ib.datasets.builders import BaseDatasetBuilder
    from lavis_ib.datasets.datasets.base import BaseDataset
    from lavis_ib.models.instructblip import InstructBLIP
    from lavis_ib.tasks import BaseTask
    from lavis_ib.tasks.eval_task import EvalTask

    return {"registry": registry, "BaseTask": BaseTask, "EvalTask": EvalTask,
            "InstructBLIP": InstructBLIP, "BaseDatasetBuilder": BaseDatasetBuilder,
            "BaseDataset": BaseDataset}[name]


def problem(span: str, keys_model: set[str], keys_data: set[str]) -> str | None:
    """Why an inline code span names something that does not exist (None: fine)."""
    from lavis_ib.cli.dispatch import COMMANDS
    from lavis_ib.common.schema import ALIASES, FIELDS
    from lavis_ib.models.instructblip import InstructBLIP

    s = span.strip()
    if s in NOT_NAMES or any(re.search(rf"\b{w}\b", s) for w in MISSPELT):
        return None
    if m := re.match(r"^lavis-ib (\w+)", s):
        placeholder = m.group(1).isupper()   # `lavis-ib COMMAND`
        return None if placeholder or m.group(1) in COMMANDS else f"no lavis-ib command '{m.group(1)}'"
    if m := re.match(r"^python -m ([\w.]+)", s):
        return None if importlib.util.find_spec(m.group(1)) else f"no module {m.group(1)}"
    if m := re.match(r"^(lavis_ib(?:\.\w+)+)", s):
        # a module/attribute, or a string constant such as the entry-point group name
        ok = resolve_dotted(m.group(1)) or f'"{m.group(1)}"' in corpus()
        return None if ok else f"{m.group(1)} does not resolve"
    if m := re.match(r"^(torch(?:\.\w+)+)$", s):
        return None if resolve_dotted(m.group(1)) else f"{m.group(1)} does not resolve"
    if m := re.match(r"^run\.(\w+)", s):
        return None if m.group(1) in FIELDS or m.group(1) in ALIASES else f"no run key {m.group(1)}"
    if m := re.match(r"^model\.(\w+)(\()?", s):
        name, call = m.groups()
        if call:
            return None if hasattr(InstructBLIP, name) else f"InstructBLIP has no {name}()"
        if name in keys_model or hasattr(InstructBLIP, name) or in_corpus(f"model.{name}"):
            return None
        return f"no model key or attribute {name}"
    if m := re.match(r"^([A-Z][A-Z0-9_]+)=", s):
        return None if in_corpus(m.group(1), wide_corpus()) else f"no environment variable {m.group(1)}"
    if m := re.match(r"^([A-Za-z][\w.-]*==[\w.]+)$", s):
        return None if m.group(1) in wide_corpus() else f"{m.group(1)} is pinned nowhere"
    if (m := re.match(r"^([\w./-]+\.py)(?:(?::|::)\s*(\w+))?", s)) and ours(m.group(1)):
        path = python_file(m.group(1))
        if path is None:
            return f"no file {m.group(1)}"
        if m.group(2) and not re.search(rf"^\s*(def|class) {m.group(2)}\b|^{m.group(2)}\b",
                                        open(path).read(), re.MULTILINE):
            return f"{m.group(1)} defines no {m.group(2)}"
        return None
    if m := re.match(r"^(\w+)=", s):
        ok = m.group(1) in keys_model or re.search(rf"\b{m.group(1)}=", wide_corpus())
        return None if ok else f"no model config key or keyword argument {m.group(1)}"
    if m := re.match(r"^datasets\.(<name>|\w+)\.(\w+)", s):
        return None if m.group(2) in keys_data else f"no dataset setting {m.group(2)}"
    if m := re.match(r"^(--[\w-]+)", s):
        flag = m.group(1)
        ok = (in_corpus(flag.lstrip("-")) and flag in corpus()) or \
            f'"{flag.lstrip("-")}"' in wide_corpus() or f'"{flag}"' in wide_corpus()
        return None if ok else f"no command-line flag {flag}"
    if m := re.match(r"^(\w+Error): ", s):
        import lavis_ib.common.errors as errors

        return None if hasattr(errors, m.group(1)) or m.group(1) in dir(__builtins__) or \
            m.group(1) in ("TypeError",) else f"no exception class {m.group(1)}"
    if m := re.match(r"^@?(registry|BaseTask|EvalTask|InstructBLIP|BaseDatasetBuilder|BaseDataset)"
                     r"\.(\w+)", s):
        return None if hasattr(owner(m.group(1)), m.group(2)) else f"{m.group(1)} has no {m.group(2)}"
    if m := re.match(r"^self\.(\w+)", s):
        ok = any(hasattr(owner(c), m.group(1)) for c in ("EvalTask", "BaseDataset")) or \
            re.search(rf"self\.{m.group(1)}(: [^=]+)? = ", corpus()) is not None
        return None if ok else f"neither EvalTask nor BaseDataset has {m.group(1)}"
    if m := re.match(r"^(\w+):(?: .*)?$", s):
        return None if m.group(1) in keys_data or m.group(1) in keys_model or \
            m.group(1) in TOP_LEVEL or in_corpus(m.group(1)) else f"no config key {m.group(1)}"
    if m := re.match(r"^build_info\.(\w+)", s):
        return None if in_corpus(m.group(1)) else f"no build_info entry {m.group(1)}"
    if s.startswith(PARAM_PREFIXES) and re.fullmatch(r"[\w.*]+", s):
        return None
    if m := re.match(r"^([A-Za-z_]\w*)\(", s):
        name = m.group(1)
        if name in BUILTINS or re.search(rf"(def|class) {name}\b", corpus()) \
                or hasattr(InstructBLIP, name):
            return None
        return f"no function or class {name}"
    if re.fullmatch(r"[A-Za-z_]\w*", s):
        if in_corpus(s) or in_corpus(s, wide_corpus()) or in_corpus(f"row_{s}", wide_corpus()):
            return None   # (a fault-matrix row `x` is the test function `row_x`)
        import transformers

        return None if hasattr(transformers, s) else f"'{s}' appears nowhere in the code"
    if "/" in s and re.fullmatch(r"[\w./-]+", s) and not s.startswith("/"):
        first = s.split("/")[0]
        if first in ("lavis_ib", "docs", "tests", "configs", "bench"):
            return None if os.path.exists(os.path.join(REPO, s)) else f"no file {s}"
    return None


@pytest.mark.parametrize("guide", GUIDES)
def test_included_code_is_the_example_file(guide):
    includes = find_includes(guide)
    assert includes, f"{guide} includes no example file"
    for path, body in includes:
        assert body == read(path), (f"{guide}: the block included from {path} differs from the "
                                    f"file; run `python tests/docs/docs_includes.py`")


def test_every_example_file_is_shown_in_a_guide():
    shown = {path for guide in GUIDES for path, _ in find_includes(guide)}
    examples = {os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "examples", "*"))
                if os.path.isfile(p) and not p.endswith(".pyc")}
    assert examples <= shown, f"example files no guide shows: {sorted(examples - shown)}"


@pytest.mark.parametrize("guide", ALL_PAGES)
def test_names_in_the_guides_exist(guide):
    keys_model, keys_data = model_keys(), dataset_keys()
    found = spans(guide)
    assert len(found) > 5
    problems = [f"`{s}`: {p}" for s in found if (p := problem(s, keys_model, keys_data))]
    assert not problems, f"{guide} names things the code lacks:\n" + "\n".join(problems)


def test_the_checker_catches_invented_names():
    keys_model, keys_data = model_keys(), dataset_keys()
    for invented in ("lavis-ib convert", "run.max_epochs", "pretrained_dir=", "model.load_lavis()",
                     "lavis_ib.models.weights.param_names.to_lavis_name", "datasets.x.templatez",
                     "python -m lavis_ib.convert", "convert_checkpoint()", "vit_checkpoint",
                     "--resume-from", "docs/examples/nothing.py", "registry.register_dataset",
                     "BaseTask.eval_keys", "self.run_ranking(model)", "sample_weight: 2",
                     "ShapeError: wrong", "build_info.pictures", "LAVIS_IB_NO_SUCH_SWITCH=1",
                     "torch==9.9.9", "models/components/llm_options.py",
                     "lavis_ib/models/llm/quantization.py: quantize_the_llm",
                     "test_nothing_like_this.py", "--no-such-switch", "no_such_keyword=3",
                     "lavis-ib convert --help", "a_fault_row_nobody_wrote"):
        assert problem(invented, keys_model, keys_data), invented
    for real in ("lavis-ib export", "run.keep_last", "checkpoint=", "model.save_pretrained(dir)",
                 "lavis_ib.models.weights.param_names.to_lavis", "datasets.my_vqa.prompt",
                 "init_from", "allow_random_init", "--checkpoint", "Blip2ForConditionalGeneration",
                 "registry.register_builder", "@registry.register_task(\"x\")", "EvalTask.EVAL_KEYS",
                 "self.run_rank(model, samples, candidates)", "sample_ratio: 0",
                 "DataError: anything", "build_info.annotations.<split>",
                 "LAVIS_IB_LOG_LEVEL=DEBUG", "torch==2.14.1", "models/llm/options.py",
                 "lavis_ib/models/llm/quantization.py: quantize_llm", "test_input_faults.py",
                 "tests/runners/test_fault_matrix.py::test_fault_matrix[<row>]",
                 "--repetition-penalty 1.5", 'device="cuda"', "sigterm_process",
                 "lavis-ib COMMAND --help", "loadDataset.py"):
        assert problem(real, keys_model, keys_data) is None, real


def test_index_links_every_guide():
    index = read("docs/index.md")
    for target in ("adding_a_dataset.md", "adding_a_task.md", "checkpoints.md", "projects.md"):
        assert f"]({target})" in index, target
        assert os.path.isfile(os.path.join(REPO, "docs", target)), target

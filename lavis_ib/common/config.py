"""Composition of a project file into one validated config.

Precedence, lowest first:
    model:    the model type's default YAML  <  project `model:`  <  --options model.*
    datasets: each builder's default YAML    <  project `datasets.<name>:`  <  --options
    run:      schema defaults (common/schema.py)  <  project `run:`  <  --options run.*
`--options model.model_type=X` picks X's default YAML (LAVIS keeps the project's type).
`plugins:` modules are imported before any class is looked up. Overrides must name keys
that exist (prefix a new key with `+`); `run` keys are typed and checked.

`includes: [base.yaml, ...]` (paths relative to the including file) merges other project
files, in order, beneath the including one, so an ablation states only its difference.

A dataset entry is composed from its builder's default YAML (`configs/datasets/<name>/
defaults.yaml`, the one home of a dataset's evaluation settings). `builder: <registered
name>` lets an entry of any name reuse a builder's files and defaults (A-OKVQA evaluated
as multiple choice next to its direct-answer entry). An entry naming a `task` other than
its defaults' drops the defaults' task settings; one switching `inference` drops the
defaults' generate/candidates/append_eos: settings of another protocol never leak in. An
entry's `generate` or `candidates` replaces the defaults' as a whole (a partial `generate`
means exactly those arguments, the model's defaults for the rest).
"""
from __future__ import annotations

import os
import re
from typing import Any, Iterable, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lavis_ib.common.containers import to_plain
from lavis_ib.common.errors import ConfigError, did_you_mean
from lavis_ib.common.registry import import_plugins, registry
from lavis_ib.common.schema import validate_run

TOP_LEVEL_KEYS = ("model", "datasets", "run", "plugins", "includes")
# Per-dataset settings read by evaluation tasks (tasks/eval_settings.py checks them).
TASK_SETTING_KEYS = ("inference", "prompt", "prompt_fields", "generate", "append_eos",
                     "candidates", "metric")
# Settings that belong to one inference mode: dropped when an entry switches mode.
INFERENCE_SETTING_KEYS = ("generate", "candidates", "append_eos")
# Mapping-valued settings a project entry replaces as a whole (never merged key by key).
WHOLE_SETTING_KEYS = ("generate", "candidates")
_KEY = re.compile(r"^\+?[A-Za-z_][\w\-]*(\.[\w\-]+)*$")


def load_yaml(path: str, what: str = "config file") -> DictConfig:
    """Load a YAML mapping, with one-line errors for a missing or malformed file."""
    if not os.path.isfile(path):
        raise ConfigError(f"{what} '{path}' does not exist.")
    try:
        cfg = OmegaConf.load(path)
    except (OmegaConfBaseException, Exception) as exc:  # yaml.YAMLError and friends
        raise ConfigError(f"{what} '{path}' is not valid YAML{_yaml_where(exc)}") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{what} '{path}' must hold a mapping at the top level.")
    return cfg


def _yaml_where(exc: Exception) -> str:
    """' at line L, column C: problem' from a YAML parser error (1-based, as editors count),
    else ': first line of the message'."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    if mark is not None:
        return f" at line {mark.line + 1}, column {mark.column + 1}: {problem or type(exc).__name__}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f": {first}"


def load_project(path: str, _stack: tuple[str, ...] = ()) -> DictConfig:
    """A project file with its `includes:` merged beneath it (recursively, in order).

    Raises:
        ConfigError: a missing or malformed file, or an include cycle (one line each).
    """
    real = os.path.realpath(path)
    if real in _stack:
        chain = " -> ".join(os.path.basename(p) for p in (*_stack, real))
        raise ConfigError(f"{path}: includes form a cycle ({chain}).")
    project = load_yaml(path, "project file" if not _stack else "included project file")
    includes = project.get("includes") or []
    if isinstance(includes, str) or not all(isinstance(i, str) for i in includes):
        raise ConfigError(f"{path}: includes must be a list of YAML paths; got {includes!r}.")
    bases = []
    for item in includes:
        target = os.path.join(os.path.dirname(os.path.abspath(path)), os.path.expanduser(item))
        if not os.path.isfile(target):
            raise ConfigError(f"{path}: included file '{item}' does not exist ({target}).")
        bases.append(load_project(target, (*_stack, real)))
    project.pop("includes", None)
    return _merge(*bases, project) if bases else project


def builder_name(name: str, entry: Any) -> str:
    """The registered builder of dataset entry `name`: its `builder:` key, else its name."""
    return str((entry.get("builder") if entry is not None else None) or name)


def compose_dataset(name: str, entry: Any = None, option: Any = None,
                    added: Iterable[str] = ()) -> DictConfig:
    """Dataset entry `name`: builder defaults < `entry` < `option` (--options).

    The defaults' task settings are dropped when the entry names another `task`, and
    their inference-mode settings when it switches `inference` (module docstring).
    """
    if not isinstance(entry or {}, (dict, DictConfig)):
        raise ConfigError(f"datasets.{name} must be a mapping; got {entry!r}.")
    entry, option = OmegaConf.create(entry or {}), option and OmegaConf.create(option)
    given = _merge(entry, option)
    builder = builder_name(name, given)
    default = load_yaml(registry.get_builder_class(builder).default_config_path(
        given.get("type") or "default"), f"dataset default config of '{name}'")
    datasets = default.get("datasets") or {}
    default = _drop_other_protocol(datasets.get(builder, datasets), given)
    base = _merge(_without(default, [k for k in WHOLE_SETTING_KEYS if k in entry]), entry)
    if option is not None:
        _check_override_keys(base, option, set(added), f"datasets.{name}")
    return _merge(base, option)


def _drop_other_protocol(default: DictConfig, given: DictConfig) -> DictConfig:
    """`default` without the task settings that `given` switches away from."""
    if "task" in given and given.get("task") != default.get("task"):
        return _without(default, TASK_SETTING_KEYS)
    if "inference" in given and given.get("inference") != default.get("inference"):
        return _without(default, INFERENCE_SETTING_KEYS)
    return default


def _without(node: DictConfig, keys: Iterable[str]) -> DictConfig:
    keys = set(keys)
    if not keys & set(node.keys()):
        return node
    return OmegaConf.create({k: node._get_node(k) for k in node.keys() if k not in keys})


def parse_options(options: Sequence[str] | None) -> list[tuple[str, str]]:
    """(key, raw value) pairs from `a.b=c` items and LAVIS's `a.b c` pairs."""
    pairs: list[tuple[str, str]] = []
    items = list(options or [])
    i = 0
    while i < len(items):
        item = str(items[i])
        key, sep, value = item.partition("=")
        if sep and _KEY.match(key):
            pairs.append((key, value))
            i += 1
        elif _KEY.match(item) and i + 1 < len(items):
            pairs.append((item, str(items[i + 1])))
            i += 2
        else:
            raise ConfigError(f"--options: cannot read '{item}'; write key=value "
                              f"(e.g. run.max_iters=100) or 'key value' pairs.")
    return pairs


def _options_config(pairs: Iterable[tuple[str, str]]) -> tuple[DictConfig, set[str]]:
    dotlist, added = [], set()
    for key, value in pairs:
        if key.startswith("+"):
            key = key[1:]
            added.add(key)
        dotlist.append(f"{key}={value}")
    try:
        return OmegaConf.from_dotlist(dotlist), added
    except OmegaConfBaseException as exc:
        raise ConfigError(f"--options: {str(exc).splitlines()[0]}") from None


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, DictConfig):
        keys = []
        for k in node.keys():
            child = node._get_node(k)
            sub = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(child, DictConfig) and len(child):
                keys.extend(_leaf_keys(child, sub))
            else:
                keys.append(sub)
        return keys
    return [prefix]


def _check_override_keys(base: DictConfig, overrides: DictConfig, added: set[str],
                         where: str) -> None:
    """Every override must name a key that already exists, unless it was `+`-prefixed."""
    for key in _leaf_keys(overrides):
        full = f"{where}.{key}"
        if full in added or any(full.startswith(a + ".") for a in added):
            continue
        parts = key.split(".")
        node: Any = base
        for depth, part in enumerate(parts):
            if not isinstance(node, DictConfig):
                break  # the parent is a leaf or None: replacing it wholesale is allowed
            if part not in node:
                siblings = [str(k) for k in node.keys()]
                raise ConfigError(
                    f"--options {full}: no key '{part}' under "
                    f"'{'.'.join([where, *parts[:depth]])}'.{did_you_mean(part, siblings)} "
                    f"Prefix the key with '+' to add a new one.")
            node = node._get_node(part)


def _merge(*nodes: Any) -> DictConfig:
    try:
        return OmegaConf.merge(*[n if n is not None else {} for n in nodes])
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot merge configs: {str(exc).splitlines()[0]}") from None


def raise_problems(where: str, problems: Sequence[str]) -> None:
    """Nothing for no problem, the problem's own line for one, else one ConfigError
    listing them all (one per line)."""
    problems = list(dict.fromkeys(problems))   # a folder shared by splits is named once
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        listed = "\n  - ".join(problems)
        raise ConfigError(f"{where}: {len(problems)} problems found before building anything:"
                          f"\n  - {listed}")


class Config:
    """A project file composed with defaults and overrides.

    Args:
        cfg_path: the project YAML.
        options: overrides, `a.b=c` or LAVIS-style `a.b c`.
        strict: raise the composition problems (all of them, in one ConfigError); False
            keeps them in `problems` for the pre-flight check (`lavis_ib/preflight.py`).

    Attributes:
        config: the merged DictConfig with `model`, `datasets`, `run`, `plugins`.
    """

    def __init__(self, cfg_path: str, options: Sequence[str] | None = None,
                 strict: bool = True) -> None:
        self.cfg_path = cfg_path
        self.problems: list[str] = []
        project = load_project(cfg_path)
        for key in project.keys():
            if key not in TOP_LEVEL_KEYS:
                self.problems.append(f"{cfg_path}: unknown top-level key '{key}'."
                                     f"{did_you_mean(str(key), TOP_LEVEL_KEYS)} "
                                     f"Allowed: {', '.join(TOP_LEVEL_KEYS)}.")
        for key in ("model", "datasets", "run"):
            if project.get(key) is not None and not isinstance(project.get(key), DictConfig):
                self.problems.append(f"{cfg_path}: '{key}' must be a mapping of settings; got "
                                     f"{type(project.get(key)).__name__} {to_plain(project.get(key))!r:.60}.")
                project.pop(key)
        overrides, added = _options_config(parse_options(options))
        for key in overrides.keys():
            if key not in TOP_LEVEL_KEYS or key == "includes":
                raise ConfigError(f"--options: unknown top-level key '{key}'."
                                  f"{did_you_mean(str(key), TOP_LEVEL_KEYS)}")

        plugins = list(overrides.get("plugins") or project.get("plugins") or [])
        import_plugins(plugins, source=f"{cfg_path}: plugins")

        model = self._attempt(self._compose_model, project, overrides, added)
        datasets = self._compose_datasets(project, overrides, added)
        run_node = self._attempt(_merge, project.get("run"), overrides.get("run"))
        run = self._attempt(lambda: validate_run(to_plain(run_node), self.problems)) \
            if run_node is not None else None
        if strict:
            raise_problems(cfg_path, self.problems)
        self.config = OmegaConf.create(
            {"model": model, "datasets": datasets, "run": run, "plugins": plugins})
        try:
            OmegaConf.resolve(self.config)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{cfg_path}: {str(exc).splitlines()[0]}") from None

    def _attempt(self, compose: Any, *args: Any) -> Any:
        """`compose(*args)`, or None with its ConfigError kept in `problems`, so that one
        run reports every composition problem (not only the first)."""
        try:
            return compose(*args)
        except ConfigError as exc:
            self.problems.append(str(exc))
            return None

    # -- parts ----------------------------------------------------------------------
    def _compose_model(self, project: DictConfig, overrides: DictConfig,
                       added: set[str]) -> DictConfig | None:
        proj_model = project.get("model")
        opt_model = overrides.get("model")
        if proj_model is None and opt_model is None:
            return None
        arch = (opt_model or {}).get("arch") or (proj_model or {}).get("arch")
        if not arch:
            raise ConfigError(f"{self.cfg_path}: model.arch is missing; name a registered "
                              f"model, e.g. 'instructblip' (lavis-ib zoo lists them).")
        model_cls = registry.get_model_class(arch)
        model_type = (opt_model or {}).get("model_type") or (proj_model or {}).get("model_type")
        if model_type is None:
            model_type = getattr(model_cls, "DEFAULT_MODEL_TYPE", None)
        if model_type is None:
            raise ConfigError(f"{self.cfg_path}: model.model_type is missing; known types "
                              f"of '{arch}': {', '.join(sorted(model_cls.PRETRAINED_MODEL_CONFIG_DICT))}.")
        default_path = model_cls.default_config_path(model_type)
        default = load_yaml(default_path, "model default config").get("model", {})
        base = _merge(default, proj_model)
        if opt_model is not None:
            _check_override_keys(base, opt_model, added, "model")
        merged = _merge(base, opt_model)
        merged.arch, merged.model_type = arch, model_type
        return merged

    def _compose_datasets(self, project: DictConfig, overrides: DictConfig,
                          added: set[str]) -> DictConfig:
        proj_datasets = project.get("datasets") or {}
        opt_datasets = overrides.get("datasets") or {}
        out = {}
        for name in opt_datasets.keys():
            if name not in proj_datasets and f"datasets.{name}" not in added:
                raise ConfigError(f"--options datasets.{name}: the project has no dataset "
                                  f"'{name}'.{did_you_mean(str(name), proj_datasets.keys())}")
        for name in list(proj_datasets.keys()) + [n for n in opt_datasets.keys()
                                                  if n not in proj_datasets]:
            entry = proj_datasets.get(name) or OmegaConf.create({})
            if not isinstance(entry, DictConfig):
                self.problems.append(f"{self.cfg_path}: datasets.{name} must be a mapping.")
                continue
            composed = self._attempt(compose_dataset, str(name), entry, opt_datasets.get(name), added)
            if composed is not None:
                out[str(name)] = composed
        return OmegaConf.create(out)

    # -- access ---------------------------------------------------------------------
    @property
    def run_cfg(self) -> DictConfig:
        return self.config.run

    @property
    def model_cfg(self) -> DictConfig:
        return self.config.model

    @property
    def datasets_cfg(self) -> DictConfig:
        return self.config.datasets

    def save(self, path: str) -> str:
        """Write the composed config (YAML) to `path` (a file or a run folder)."""
        if os.path.isdir(path) or not path.endswith((".yaml", ".yml")):
            os.makedirs(path, exist_ok=True)
            path = os.path.join(path, "config.yaml")
        tmp = f"{path}.tmp"
        OmegaConf.save(self.config, tmp)
        os.replace(tmp, path)
        return path

    def __repr__(self) -> str:
        return OmegaConf.to_yaml(self.config)

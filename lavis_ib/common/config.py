"""Composition of a project file into one validated config: defaults < project < options.

The one place where a project's `model:`, `datasets:` and `run:` nodes meet their defaults
and the `--options`, so every entry point composes alike (the precedence: `Config`)."""
from __future__ import annotations

import os
import re
from typing import Any, Iterable, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from lavis_ib.common.containers import to_plain
from lavis_ib.common.errors import ConfigError, did_you_mean
from lavis_ib.common.project_files import (PROJECT_KEYS, check_override_keys, load_project,
                                           load_yaml, merge_nodes, options_config, parse_options,
                                           quoted_key, raise_problems)
from lavis_ib.common.registry import import_plugins, registry
from lavis_ib.common.schema import validate_run

TOP_LEVEL_KEYS = PROJECT_KEYS
# `${oc.env:NAME}` and `${oc.env:NAME,default}` in a value (OmegaConf's resolver)
_ENV_REF = re.compile(r"\$\{oc\.env:\s*([^,}\s]+)\s*(,)?")


def unset_env_refs(node: Any, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, variable, value) of each `${oc.env:NAME}` without a default whose variable is
    not set, read from the raw values (nothing is resolved: OmegaConf would raise its own
    multi-line error only when the key is first read)."""
    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=False)
    if isinstance(node, dict):
        items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in node.items()]
    elif isinstance(node, list):
        items = [(f"{prefix}[{i}]", v) for i, v in enumerate(node)]
    else:
        return [(prefix, name, str(node))
                for name, default in _ENV_REF.findall(node if isinstance(node, str) else "")
                if not default and name not in os.environ]
    return [ref for key, value in items for ref in unset_env_refs(value, key)]


def unset_env_problems(project: DictConfig, overrides: DictConfig, where: str) -> list[str]:
    """One line per unset `${oc.env:NAME}` of the project (a key the options replace is
    not read) or of the options, naming the variable and the key."""
    given = [(k, n, v, where) for k, n, v in unset_env_refs(project)
             if not any(k == o or k.startswith((o + ".", o + "[")) for o in _leaf_keys(overrides))]
    given += [(k, n, v, "--options") for k, n, v in unset_env_refs(overrides)]
    return [f"{source}: {key}: environment variable ${name} is not set (in '{value}'); set it, "
            f"or give a default: ${{oc.env:{name},DEFAULT}}." for key, name, value, source in given]


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, DictConfig):
        return [leaf for k in node.keys() for leaf in
                _leaf_keys(node._get_node(k), f"{prefix}.{k}" if prefix else str(k))]
    return [prefix]


def _interpolation_error(where: str, exc: OmegaConfBaseException) -> ConfigError:
    """One line from an OmegaConf interpolation error: the key and the first line."""
    key = getattr(exc, "full_key", None)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ConfigError(f"{where}: {key + ': ' if key else ''}{first}")


def builder_name(name: str, entry: Any) -> str:
    """The registered builder of dataset entry `name`: its `builder:` key, else its name."""
    return str((entry.get("builder") if entry is not None else None) or name)


def compose_dataset(name: str, entry: Any = None, option: Any = None,
                    added: Iterable[str] = ()) -> DictConfig:
    """Dataset entry `name`: builder defaults < `entry` < `option` (--options), the
    defaults' keys that a registered entry rule says the entry replaces left out.

    The defaults are the builder's YAML (`configs/datasets/<name>/defaults.yaml`, the one
    home of a dataset's evaluation settings). `builder: <registered name>` lets an entry of
    any name reuse a builder's files and defaults (A-OKVQA evaluated as multiple choice next
    to its direct-answer entry). Which default keys an entry replaces instead of merging
    over (another task's or inference mode's settings) is not known here: the registered
    entry rules say (`registry.entry_rules`; the evaluation settings' rule is in
    lavis_ib/tasks/eval_settings.py).
    """
    if not isinstance(entry or {}, (dict, DictConfig)):
        raise ConfigError(f"datasets.{name} must be a mapping; got {entry!r}.")
    if option is not None and not isinstance(option, (dict, DictConfig)):
        raise ConfigError(f"--options datasets.{name}: give its settings as "
                          f"datasets.{name}.KEY=VALUE; got {to_plain(option)!r}.")
    entry, option = OmegaConf.create(entry or {}), option and OmegaConf.create(option)
    given = merge_nodes(entry, option)
    builder = builder_name(name, given)
    default = load_yaml(registry.get_builder_class(builder).default_config_path(
        given.get("type") or "default"), f"dataset default config of '{name}'")
    datasets = default.get("datasets") or {}
    default = datasets.get(builder, datasets)
    replaced = set().union(*(rule(default, entry, option) for _, rule in registry.entry_rules))
    base = merge_nodes(_without(default, replaced), entry)
    if option is not None:
        check_override_keys(base, option, set(added), f"datasets.{name}")
    return merge_nodes(base, option)


def _without(node: DictConfig, keys: Iterable[str]) -> DictConfig:
    keys = set(keys)
    if not keys & set(node.keys()):
        return node
    return OmegaConf.create({k: node._get_node(k) for k in node.keys() if k not in keys})


class Config:
    """A project file composed with defaults and overrides.

    Precedence, lowest first:

        model:    the model type's default YAML  <  project `model:`  <  --options model.*
        datasets: each builder's default YAML    <  project `datasets.<name>:`  <  --options
        run:      schema defaults (common/schema.py)  <  project `run:`  <  --options run.*

    `--options model.model_type=X` picks X's default YAML (LAVIS keeps the project's type).
    `plugins:` modules are imported before any class is looked up. Overrides must name keys
    that exist (prefix a new key with `+`); `run` keys are typed and checked.
    `includes: [base.yaml, ...]` (paths relative to the including file) merges other project
    files, in order, beneath the including one, so an ablation states only its difference.

    Args:
        cfg_path: the project YAML.
        options: overrides, `a.b=c` or LAVIS-style `a.b c`.
        strict: raise the composition problems (all of them, in one ConfigError); False
            keeps them in `problems` for the pre-flight check (`lavis_ib/cli/preflight.py`).

    Attributes:
        config: the merged DictConfig with `model`, `datasets`, `run`, `plugins`.
        failed_datasets: names of the dataset entries that did not compose (each with its
            problem in `problems`), so that later checks do not report them a second time.
    """

    def __init__(self, cfg_path: str, options: Sequence[str] | None = None,
                 strict: bool = True) -> None:
        self.cfg_path = cfg_path
        self.problems: list[str] = []
        self.failed_datasets: set[str] = set()
        project = load_project(cfg_path)
        for key in project.keys():
            if key not in TOP_LEVEL_KEYS:
                self.problems.append(f"{cfg_path}: unknown top-level key{quoted_key(key)}."
                                     f"{did_you_mean(str(key), TOP_LEVEL_KEYS)} "
                                     f"Allowed: {', '.join(TOP_LEVEL_KEYS)}.")
        for key in ("model", "datasets", "run"):
            if project.get(key) is not None and not isinstance(project.get(key), DictConfig):
                self.problems.append(f"{cfg_path}: '{key}' must be a mapping of settings; got "
                                     f"{type(project.get(key)).__name__} {to_plain(project.get(key))!r:.60}.")
                project.pop(key)
        overrides, added = options_config(parse_options(options))
        for key in overrides.keys():
            if key not in TOP_LEVEL_KEYS or key == "includes":
                raise ConfigError(f"--options: unknown top-level key '{key}'."
                                  f"{did_you_mean(str(key), TOP_LEVEL_KEYS)}")
        raise_problems(cfg_path, unset_env_problems(project, overrides, cfg_path))
        try:
            self._compose(project, overrides, added, strict)
        except InterpolationResolutionError as exc:   # e.g. ${run.no_such_key}
            raise _interpolation_error(cfg_path, exc) from None

    def _compose(self, project: DictConfig, overrides: DictConfig, added: set[str],
                 strict: bool) -> None:
        cfg_path = self.cfg_path

        plugins = list(overrides.get("plugins") or project.get("plugins") or [])
        import_plugins(plugins, source=f"{cfg_path}: plugins")

        model = self._attempt(self._compose_model, project, overrides, added)
        datasets = self._compose_datasets(project, overrides, added)
        run_node = self._attempt(merge_nodes, project.get("run"), overrides.get("run"))
        run = self._attempt(lambda: validate_run(to_plain(run_node), self.problems)) \
            if run_node is not None else None
        if strict:
            raise_problems(cfg_path, self.problems)
        self.config = OmegaConf.create(
            {"model": model, "datasets": datasets, "run": run, "plugins": plugins})
        try:
            OmegaConf.resolve(self.config)
        except OmegaConfBaseException as exc:
            raise _interpolation_error(cfg_path, exc) from None

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
        base = merge_nodes(default, proj_model)
        if opt_model is not None:
            check_override_keys(base, opt_model, added, "model")
        merged = merge_nodes(base, opt_model)
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
                self.failed_datasets.add(str(name))
                continue
            composed = self._attempt(compose_dataset, str(name), entry, opt_datasets.get(name), added)
            if composed is None:
                self.failed_datasets.add(str(name))
            else:
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

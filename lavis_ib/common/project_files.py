"""Reading project files and `--options`: YAML with one-line errors (file, line and
column), `includes:` merged beneath the including file, `a.b=c` / LAVIS `a.b c` overrides
that must name existing keys unless `+`-prefixed, and merging that reports failures as one
line. `lavis_ib.common.config` composes what these read.
"""
from __future__ import annotations

import os
import re
from typing import Any, Iterable, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lavis_ib.common.errors import ConfigError, did_you_mean

_KEY = re.compile(r"^\+?[A-Za-z_][\w\-]*(\.[\w\-]+)*$")
#: the top-level keys of a project file
PROJECT_KEYS = ("model", "datasets", "run", "plugins", "includes")
#: a key quoted back in an error: a short name (anything else is described, not echoed, so
#: a file that is not a project, e.g. a system file named by `includes:`, is not printed)
_QUOTABLE = re.compile(r"[A-Za-z_][\w\-.]{0,39}")


def quoted_key(key: object) -> str:
    """` 'key'` for a short name; else ` of N characters (not a name)`: its text is not
    echoed (written to follow "key")."""
    text = str(key)
    return f" '{text}'" if _QUOTABLE.fullmatch(text) else f" of {len(text)} characters (not a name)"


def load_yaml(path: str, what: str = "config file") -> DictConfig:
    """Load a YAML mapping, with one-line errors for a missing or malformed file."""
    if not os.path.isfile(path):
        raise ConfigError(f"{what} '{path}' does not exist.")
    try:
        cfg = OmegaConf.load(path)
    except (OmegaConfBaseException, Exception) as exc:  # yaml.YAMLError and friends
        raise ConfigError(f"{what} '{path}' is not valid YAML{_yaml_where(exc)}") from None
    if not isinstance(cfg, DictConfig) or _scalar_document(path, cfg):
        raise ConfigError(f"{what} '{path}' must hold a mapping at the top level; it holds "
                          f"{'a list' if isinstance(cfg, ListConfig) else 'plain text'}.")
    return cfg


def _scalar_document(path: str, cfg: DictConfig) -> bool:
    """Whether the file is one plain scalar (text, not YAML settings): OmegaConf reads such
    a document as a mapping of the text to null; only such a load is parsed again."""
    if len(cfg) != 1 or cfg._get_node(next(iter(cfg.keys())))._value() is not None:
        return False
    import yaml

    with open(path, encoding="utf-8") as f:
        return isinstance(yaml.compose(f, Loader=yaml.SafeLoader), yaml.ScalarNode)


def _yaml_where(exc: Exception) -> str:
    """' at line L, column C: problem' from a YAML parser error (1-based, as editors count),
    else ': first line of the message'."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    if mark is not None:
        return f" at line {mark.line + 1}, column {mark.column + 1}: {_short(problem or type(exc).__name__)}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f": {_short(first)}"


def _short(text: str, limit: int = 100) -> str:
    """A parser's message cut to `limit` characters (it may quote the file's text)."""
    return text if len(text) <= limit else text[:limit] + "..."


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
        base = load_project(target, (*_stack, real))
        unknown = [k for k in base.keys() if k not in PROJECT_KEYS]
        if unknown:
            more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
            raise ConfigError(f"{path}: included file '{item}' is not a project file: its top-level "
                              f"key{quoted_key(unknown[0])}{more} is not one of {', '.join(PROJECT_KEYS)}.")
        bases.append(base)
    project.pop("includes", None)
    return merge_nodes(*bases, project) if bases else project


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


def options_config(pairs: Iterable[tuple[str, str]]) -> tuple[DictConfig, set[str]]:
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


def check_override_keys(base: DictConfig, overrides: DictConfig, added: set[str],
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


def merge_nodes(*nodes: Any) -> DictConfig:
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


def model_overrides(options: Sequence[str]) -> dict:
    """Model config overrides from `key=value` strings (the `--options` of the prediction
    and serving commands) as a plain nested dict; a grammar error names the option."""
    from omegaconf import OmegaConf

    from lavis_ib.common.containers import to_plain

    pairs = parse_options(options)
    try:
        node = OmegaConf.from_dotlist([f"{k}={v}" for k, v in pairs])
    except Exception as exc:  # omegaconf grammar errors
        raise ConfigError(f"--options: {str(exc).splitlines()[0]}") from None
    return to_plain(node)

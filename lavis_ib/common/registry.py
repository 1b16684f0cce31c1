"""Registries: name -> class tables for models, builders, tasks, processors, runners and
LR schedulers (and the rules composing a dataset entry), with LAVIS's public function names.

Unlike LAVIS's, a lookup never returns None and nothing relies on `import *` side effects:
built-ins load on first lookup, plugins through ``lavis_ib.plugins`` or ``plugins:``."""
from __future__ import annotations

import importlib
import threading
from typing import Any, Callable, Iterator

from lavis_ib.common.errors import ConfigError, RegistryError, did_you_mean

ENTRY_POINT_GROUP = "lavis_ib.plugins"


class Registry:
    """A named table of classes (or callables) of one kind.

    Lookups never return None: an unknown name raises `RegistryError` listing the registered
    names and the closest match. The library's own classes register when their module is
    imported; each registry imports its built-in module on first lookup (and listing), so
    nothing depends on `import *` side effects and `import lavis_ib` stays light. Installed
    packages can register through the entry-point group ``lavis_ib.plugins``; project files
    list extra modules under ``plugins:``.

    Args:
        kind: what it holds, used in messages ("model", "builder", ...).
        base: dotted path "module:Class" every registered class must subclass, resolved
            lazily so that the registry itself imports nothing heavy. None: no check.
        locations: modules imported on first lookup that register the built-in entries.
        contract: one sentence on what a registered entry must do (shown in `repr`).

    Example:
        >>> models = Registry("model")
        >>> @models.register("mine")
        ... class Mine: ...
        >>> models.get("mine") is Mine
        True
    """

    def __init__(self, kind: str, base: str | None = None, locations: tuple[str, ...] = (),
                 contract: str = "") -> None:
        self.kind = kind
        self._base_path = base
        self._locations = tuple(locations)
        self.contract = contract
        self._table: dict[str, Any] = {}
        self._loaded = False
        self._lock = threading.RLock()

    # -- registration -------------------------------------------------------------
    def register(self, name: str | None = None, obj: Any = None, force: bool = False) -> Any:
        """Register `obj` under `name`; without `obj`, return a decorator.

        Raises:
            RegistryError: `name` is taken (pass ``force=True`` to replace it) or `obj`
                does not subclass the registry's base class.
        """
        if obj is None:
            def decorator(target: Any) -> Any:
                self.register(name or target.__name__, target, force=force)
                return target
            return decorator
        key = name or obj.__name__
        self._check_base(key, obj)
        with self._lock:
            if key in self._table and self._table[key] is not obj and not force:
                old = self._table[key]
                raise RegistryError(
                    f"{self.kind} '{key}' is already registered by "
                    f"{getattr(old, '__module__', '?')}.{getattr(old, '__qualname__', old)}; "
                    f"choose another name or pass force=True to replace it.")
            self._table[key] = obj
        return obj

    def _check_base(self, key: str, obj: Any) -> None:
        if self._base_path is None:
            return
        module_name, _, cls_name = self._base_path.partition(":")
        base = getattr(importlib.import_module(module_name), cls_name)
        if not (isinstance(obj, type) and issubclass(obj, base)):
            raise RegistryError(
                f"cannot register {self.kind} '{key}': {obj!r} must be a subclass of "
                f"{module_name}.{cls_name}.")

    # -- lookup -------------------------------------------------------------------
    def _load_builtins(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            self._loaded = True  # set first: built-in modules call register() re-entrantly
            for module in self._locations:
                importlib.import_module(module)
            load_entry_point_plugins()

    def get(self, name: str) -> Any:
        """The entry registered as `name`.

        Raises:
            RegistryError: naming the registered entries and the closest match.
        """
        if name not in self._table:
            self._load_builtins()
        try:
            return self._table[name]
        except KeyError:
            known = sorted(self._table)
            raise RegistryError(
                f"unknown {self.kind} '{name}'.{did_you_mean(name, known)} "
                f"Registered {self.kind}s: {', '.join(known) or '(none)'}. If it is your own, "
                f"is it defined in a module listed under plugins: (or advertised in the "
                f"'{ENTRY_POINT_GROUP}' entry-point group)?") from None

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._table)

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._table

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        self._load_builtins()
        return iter(sorted(self._table.items()))

    def __len__(self) -> int:
        self._load_builtins()
        return len(self._table)

    def unregister(self, name: str) -> None:
        """Remove an entry (tests and plugin reloads)."""
        with self._lock:
            self._table.pop(name, None)

    def __repr__(self) -> str:
        rows = [f"Registry of {self.kind}s" + (f" ({self.contract})" if self.contract else "")]
        for key, obj in sorted(self._table.items()):
            rows.append(f"  {key:<28} {getattr(obj, '__module__', '?')}."
                        f"{getattr(obj, '__qualname__', obj)}")
        return "\n".join(rows)


_plugins_loaded = False


def load_entry_point_plugins() -> list[str]:
    """Import every module advertised under the ``lavis_ib.plugins`` entry-point group.

    Raises:
        ConfigError: a module that fails to import (any exception, or `sys.exit`), naming
            the entry point, its module and the error (`plugin_import_error`).
    """
    global _plugins_loaded
    if _plugins_loaded:
        return []
    _plugins_loaded = True
    from importlib.metadata import entry_points

    loaded = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except (Exception, SystemExit) as exc:
            raise plugin_import_error(f"entry point '{ep.name}' of group '{ENTRY_POINT_GROUP}'",
                                      ep.value, exc) from None
        loaded.append(ep.value)
    return loaded


def plugin_import_error(source: str, module: str, exc: BaseException) -> Exception:
    """One line for a plugin module that did not import: its name and its error (a missing
    module of its own name is a spelling or path problem; anything else, a missing
    dependency, a SyntaxError, an exception or `sys.exit` at import, is the module's)."""
    if isinstance(exc, ModuleNotFoundError) and exc.name and (
            module == exc.name or module.startswith(exc.name + ".")):
        return ConfigError(f"{source}: plugin module '{module}' cannot be imported ({exc}); "
                           f"check its spelling and that it is on PYTHONPATH or installed.")
    if isinstance(exc, SystemExit):
        error = f"it called sys.exit({exc.code!r})"
    elif isinstance(exc, SyntaxError):
        error = f"SyntaxError: {exc.msg} ({exc.filename}, line {exc.lineno})"
    else:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        error = f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__
    return ConfigError(f"{source}: plugin module '{module}' failed while being imported: {error}. "
                       f"Fix the module (or its missing dependency), or remove it from the plugins.")


def import_plugins(modules: list[str] | tuple[str, ...], source: str = "plugins") -> None:
    """Import the plugin modules a project lists: a module that does not import, for any
    reason (an exception or `sys.exit` at import included), is one `ConfigError` line
    naming it and its error."""
    for module in modules or ():
        try:
            importlib.import_module(str(module))
        except (Exception, SystemExit) as exc:
            raise plugin_import_error(source, str(module), exc) from None


class _LavisRegistry:
    """The library-wide registries behind LAVIS's function names."""

    def __init__(self) -> None:
        self.models = Registry(
            "model", "lavis_ib.models.base_model:BaseModel", ("lavis_ib.models.builtin",),
            "an nn.Module with from_config(cfg) and default_config_path(model_type)")
        self.builders = Registry(
            "builder", "lavis_ib.datasets.builders.base_builder:BaseDatasetBuilder",
            ("lavis_ib.datasets.builders.builtin",),
            "called with a dataset config; build_datasets() returns {split: Dataset}")
        self.tasks = Registry(
            "task", "lavis_ib.tasks.base_task:BaseTask", ("lavis_ib.tasks.builtin",),
            "builds models/datasets for training, scores and evaluates predictions")
        self.processors = Registry(
            "processor", "lavis_ib.processors.base_processor:BaseProcessor",
            ("lavis_ib.processors.builtin",),
            "from_config(cfg) -> callable turning a raw image/video/text into model input")
        self.runners = Registry(
            "runner", None, ("lavis_ib.runners.builtin",),
            "called with (cfg, task, model, datasets); train() and evaluate()")
        self.lr_schedulers = Registry(
            "lr_scheduler", None, ("lavis_ib.runners.builtin",),
            "called with an optimizer and run settings; step(cur_step) sets the LR")
        self.entry_rules = Registry(
            "dataset entry rule", None, ("lavis_ib.tasks.eval_settings",),
            "called with (defaults, entry, option); returns the keys of a builder's defaults "
            "that the dataset entry replaces instead of merging over")

    # decorators ---------------------------------------------------------------------
    def register_model(self, name: str, force: bool = False) -> Callable:
        return self.models.register(name, force=force)

    def register_builder(self, name: str, force: bool = False) -> Callable:
        return self.builders.register(name, force=force)

    def register_task(self, name: str, force: bool = False) -> Callable:
        return self.tasks.register(name, force=force)

    def register_processor(self, name: str, force: bool = False) -> Callable:
        return self.processors.register(name, force=force)

    def register_runner(self, name: str, force: bool = False) -> Callable:
        return self.runners.register(name, force=force)

    def register_lr_scheduler(self, name: str, force: bool = False) -> Callable:
        return self.lr_schedulers.register(name, force=force)

    def register_entry_rule(self, name: str, force: bool = False) -> Callable:
        return self.entry_rules.register(name, force=force)

    # lookups ------------------------------------------------------------------------
    def get_model_class(self, name: str) -> Any:
        return self.models.get(name)

    def get_builder_class(self, name: str) -> Any:
        return self.builders.get(name)

    def get_task_class(self, name: str) -> Any:
        return self.tasks.get(name)

    def get_processor_class(self, name: str) -> Any:
        return self.processors.get(name)

    def get_runner_class(self, name: str) -> Any:
        return self.runners.get(name)

    def get_lr_scheduler_class(self, name: str) -> Any:
        return self.lr_schedulers.get(name)

    # listings -----------------------------------------------------------------------
    def list_models(self) -> list[str]:
        return self.models.names()

    def list_datasets(self) -> list[str]:
        return self.builders.names()

    def list_tasks(self) -> list[str]:
        return self.tasks.names()

    def list_processors(self) -> list[str]:
        return self.processors.names()

    def list_runners(self) -> list[str]:
        return self.runners.names()

    def list_lr_schedulers(self) -> list[str]:
        return self.lr_schedulers.names()


registry = _LavisRegistry()

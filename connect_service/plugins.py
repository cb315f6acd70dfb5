"""Plugin manager and the connection-type registry, built once per app by the factory.

Plugins come from the ``connect_service`` entry-point group (built-ins and
third-party packages alike) plus any objects handed to ``create_app(config,
plugins=...)``. Start-up fails with :class:`PluginError` (one line naming the
plugin) when a plugin cannot be imported, implements a hook that does not
exist, returns something that is not a valid ``ConnectionType``, or registers
a type name another plugin already registered.
"""
from __future__ import annotations

import importlib.metadata
import logging
import os
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Iterable

import pluggy

from . import hookspecs
from .config import ConfigError
from .connection_types import ConnectionType

ENTRY_POINT_GROUP = "connect_service"
PROJECT_NAME = "connect_service"
#: hooks that only observe: every implementation runs even if another one raises
OBSERVER_HOOKS = ("connection_activated", "connection_revoked", "connection_failed")

log = logging.getLogger(__name__)


class PluginError(ConfigError):
    """A plugin cannot be loaded: import error, unknown hook, bad class, duplicate type name.

    A ``ConfigError``, so the CLI and the WSGI entry point stop with its one-line message.
    """


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin comes from: its name (what ``disabled_plugins`` takes) and distribution."""

    name: str
    distribution: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        if self.distribution:
            return f"{self.name} ({self.distribution} {self.version})"
        return f"{self.name} (not from an installed distribution)"


@dataclass
class Registry:
    """Everything the core needs from plugins: the manager, ``{type name: class}`` and the plugin of each type."""

    pm: pluggy.PluginManager
    types: dict[str, type[ConnectionType]]
    plugins: dict[str, PluginInfo] = field(default_factory=dict)

    def get(self, name: str) -> type[ConnectionType] | None:
        """The connection type registered under ``name``, or None."""
        return self.types.get(name)

    def by_connector(self, connector_name: str) -> type[ConnectionType] | None:
        """The OAuth2 or action-account type that owns a connector (first registered wins)."""
        for cls in self.types.values():
            if cls.connector_name == connector_name and cls.auth != "credentials":
                return cls
        return None

    def connectors(self) -> set[str]:
        """Connector names served by OAuth2 and action-account types."""
        return {cls.connector_name for cls in self.types.values() if cls.auth != "credentials"}

    def plugin_of(self, type_name: str) -> PluginInfo | None:
        """The plugin (and distribution) that registered a type."""
        return self.plugins.get(type_name)

    def describe(self) -> list[dict[str, Any]]:
        """Every type's ``describe()`` entry, sorted by name (what ``GET /v1/connection-types`` lists)."""
        return [self.types[name].describe() for name in sorted(self.types)]

    def notify(self, hook: str, **kwargs: Any) -> None:
        """Call a hook on every plugin implementing it, through pluggy with keyword arguments.

        For the lifecycle hooks (:data:`OBSERVER_HOOKS`) each implementation
        runs on its own, in registration order: an exception is logged with
        the plugin's name and does not reach the caller or stop the other
        plugins, since the change being observed has already happened.
        """
        if hook not in OBSERVER_HOOKS:
            getattr(self.pm.hook, hook)(**kwargs)
            return
        for name, call in each_implementation(self.pm, hook):
            try:
                call(**kwargs)
            except Exception:
                log.exception("plugin %r raised in %s; the other plugins were still notified", name, hook)


def each_implementation(pm: pluggy.PluginManager, hook: str):
    """``(plugin name, caller)`` per implementation of ``hook``, in registration order.

    Each caller is pluggy's own hook caller restricted to one plugin
    (``subset_hook_caller``), so pluggy still matches the keyword arguments to
    what the implementation accepts: a plugin may take any subset of a
    hook's arguments, and arguments added to a hook later reach the plugins
    that ask for them. (``pm.hook.<name>()`` alone would stop at the first
    exception and could not say which plugin returned what.)
    """
    impls = getattr(pm.hook, hook).get_hookimpls()  # registration order (pluggy calls last-registered first)
    plugins = [impl.plugin for impl in impls]
    for impl in impls:
        others = [p for p in plugins if p is not impl.plugin]
        yield impl.plugin_name, pm.subset_hook_caller(hook, remove_plugins=others)


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    """Entry points of our group, sorted by name; one name declared by two distributions is an error."""
    seen: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        other = seen.get(ep.name)
        if other is not None and other.value != ep.value:
            raise PluginError(f"plugin name {ep.name!r} is declared by two distributions: "
                              f"{_dist_label(other)} ({other.value}) and {_dist_label(ep)} ({ep.value})")
        seen[ep.name] = ep
    return [seen[name] for name in sorted(seen)]


def _dist_label(ep: importlib.metadata.EntryPoint) -> str:
    return ep.dist.metadata["Name"] if ep.dist is not None else "an unknown distribution"


#: what ``importlib.metadata.packages_distributions()`` answered, and for which installed set
_DISTRIBUTIONS: dict[str, Any] = {}


def _installed_set() -> tuple:
    """The import path and each folder's modification time: installing or removing a distribution changes it."""
    def mtime(entry: str):
        try:
            return os.stat(entry or ".").st_mtime_ns
        except OSError:
            return None
    return tuple((entry, mtime(entry)) for entry in sys.path)


def _top_level_distributions() -> dict[str, list[str]]:
    """``importlib.metadata.packages_distributions()``, read once per installed set.

    It reads the metadata of every installed distribution (about 50 ms), and ``create_app`` asks
    for each plugin object it is given; the answer only changes when something is installed or
    removed, which changes :func:`_installed_set`. Callers only read it.
    """
    key = _installed_set()
    if _DISTRIBUTIONS.get("key") != key:
        _DISTRIBUTIONS.update(key=key, value=importlib.metadata.packages_distributions())
    return _DISTRIBUTIONS["value"]


def _info_for_object(name: str, plugin: object) -> PluginInfo:
    """A plugin given to ``create_app``: find its distribution from its top-level module, if installed."""
    module = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
    top = (module or "").split(".")[0]
    dists = _top_level_distributions().get(top) or []
    if not dists:
        return PluginInfo(name)
    return PluginInfo(name, dists[0], importlib.metadata.version(dists[0]))


def _one_line(exc: Exception) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def _register(pm: pluggy.PluginManager, plugin: object, info: PluginInfo) -> None:
    try:
        pm.register(plugin, name=info.name)
    except (pluggy.PluginValidationError, ValueError) as exc:  # ValueError: one name or object twice
        raise PluginError(f"plugin {info}: {_one_line(exc)}") from None


def get_plugin_manager(config: dict[str, Any], extra_plugins: Iterable[object] = ()) -> Registry:
    """Load entry-point plugins (minus ``disabled_plugins``) and ``extra_plugins``; build the registry.

    ``extra_plugins`` (modules or objects) are registered after the entry
    points under their ``__name__``; one that is already loaded through its
    entry point is not registered twice.
    """
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    disabled = set(config.get("disabled_plugins") or [])
    infos: dict[str, PluginInfo] = {}
    names: set[str] = set()  # every plugin name seen, loaded or disabled

    entry_points = _entry_points()
    for ep in entry_points:
        names.add(ep.name)
        if ep.name in disabled:
            continue
        info = PluginInfo(ep.name, ep.dist.metadata["Name"] if ep.dist else None,
                          ep.dist.version if ep.dist else None)
        try:
            plugin = ep.load()
        except Exception as exc:  # any failure of third-party code at import: name it and stop
            raise PluginError(f"plugin {info} failed to import {ep.value}: {type(exc).__name__}: {exc}") from exc
        _register(pm, plugin, info)
        infos[ep.name] = info

    for plugin in extra_plugins:
        if pm.is_registered(plugin):
            continue
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        names.add(name)
        if name in disabled:
            continue
        info = _info_for_object(name, plugin)
        _register(pm, plugin, info)
        infos[name] = info

    unknown = disabled - names
    if unknown:
        log.warning("disabled_plugins names %s, which no installed plugin is called", ", ".join(sorted(unknown)))

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        raise PluginError(f"plugin {infos.get(name, name)}: {_one_line(exc)}. Hooks that exist: "
                          f"{', '.join(_hook_names())}") from None
    for hook in OBSERVER_HOOKS:
        for impl in getattr(pm.hook, hook).get_hookimpls():
            if impl.hookwrapper or impl.wrapper:
                raise PluginError(f"plugin {infos.get(impl.plugin_name, impl.plugin_name)}: {hook} "
                                  f"is an observer hook and cannot be a wrapper")

    types: dict[str, type[ConnectionType]] = {}
    type_plugins: dict[str, PluginInfo] = {}
    for name, call in each_implementation(pm, "register_connection_types"):
        info = infos.get(name) or PluginInfo(name)
        results = call()  # pluggy's list of non-None results: at most one for one plugin
        if not results:
            continue
        result = results[0]
        if isinstance(result, (type, str, bytes)) or not hasattr(result, "__iter__"):
            raise PluginError(f"plugin {info}: register_connection_types must return a list of "
                              f"ConnectionType subclasses, got {result!r}")
        for cls in result:
            if not (isinstance(cls, type) and issubclass(cls, ConnectionType)):
                raise PluginError(f"plugin {info} returned {cls!r}, not a ConnectionType subclass")
            try:
                cls.check_definition()
            except TypeError as exc:
                raise PluginError(f"plugin {info}: {exc}") from None
            if cls.name in types:
                raise PluginError(f"connection type {cls.name!r} is registered twice: "
                                  f"by plugin {type_plugins[cls.name]} and by plugin {info}")
            types[cls.name] = cls
            type_plugins[cls.name] = info
    return Registry(pm=pm, types=types, plugins=type_plugins)


def _hook_names() -> list[str]:
    return sorted(name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), f"{PROJECT_NAME}_spec"))

"""Plugin manager and the connection-type registry, built once per app."""
from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from typing import Any, Iterable

import pluggy

from . import hookspecs
from .connection_types import ConnectionType

ENTRY_POINT_GROUP = "connect_service"


class PluginError(Exception):
    """A plugin cannot be loaded: duplicate type names, bad hook names, bad classes."""


@dataclass
class Registry:
    """Everything the core needs from plugins: the manager and ``{type name: class}``."""

    pm: pluggy.PluginManager
    types: dict[str, type[ConnectionType]]
    origins: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> type[ConnectionType] | None:
        return self.types.get(name)

    def by_connector(self, connector_name: str) -> type[ConnectionType] | None:
        """The connection type that owns a connector (first registered wins)."""
        for cls in self.types.values():
            if cls.connector_name == connector_name and cls.auth != "credentials":
                return cls
        return None

    def connectors(self) -> set[str]:
        return {cls.connector_name for cls in self.types.values() if cls.auth != "credentials"}

    def notify(self, hook: str, **kwargs: Any) -> None:
        getattr(self.pm.hook, hook)(**kwargs)


def _plugin_origin(pm: pluggy.PluginManager, plugin: object) -> str:
    for p, dist in pm.list_plugin_distinfo():
        if p is plugin:
            return f"{dist.project_name} {dist.version}"
    return getattr(plugin, "__name__", repr(plugin))


def get_plugin_manager(config: dict[str, Any], extra_plugins: Iterable[object] = ()) -> Registry:
    """Load entry-point plugins (minus ``disabled_plugins``) and ``extra_plugins``; build the registry."""
    pm = pluggy.PluginManager("connect_service")
    pm.add_hookspecs(hookspecs)
    for name in config.get("disabled_plugins", []):
        pm.set_blocked(name)
    try:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"a connect_service plugin failed to import: {exc}") from exc
    for plugin in extra_plugins:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        if not pm.is_blocked(name):
            pm.register(plugin, name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {pm.get_name(exc.plugin)!r}: {exc}") from None

    types: dict[str, type[ConnectionType]] = {}
    origins: dict[str, str] = {}
    for impl in reversed(pm.hook.register_connection_types.get_hookimpls()):
        plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)
        origin = f"{plugin_name} ({_plugin_origin(pm, impl.plugin)})"
        for cls in impl.function() or []:
            if not (isinstance(cls, type) and issubclass(cls, ConnectionType)):
                raise PluginError(f"plugin {plugin_name!r} returned {cls!r}, not a ConnectionType subclass")
            cls.check_definition()
            if cls.name in types:
                raise PluginError(
                    f"connection type {cls.name!r} is registered twice: by {origins[cls.name]} and by {origin}"
                )
            types[cls.name] = cls
            origins[cls.name] = origin
    return Registry(pm=pm, types=types, origins=origins)


def distribution_of(module_name: str) -> str | None:
    top = module_name.split(".")[0]
    dists = importlib.metadata.packages_distributions().get(top)
    return dists[0] if dists else None

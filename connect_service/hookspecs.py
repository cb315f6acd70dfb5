"""Hook specifications: the whole contract between the core and a plugin.

Arguments only ever grow (new ones are added, none renamed or removed), so a
plugin written today keeps working. ``docs/plugins.md`` documents each hook
with its signature and an example.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("connect_service")
hookimpl = pluggy.HookimplMarker("connect_service")


@hookspec
def register_connection_types():
    """Return a list of ``ConnectionType`` subclasses this plugin contributes."""


@hookspec
def connection_activated(connection):
    """Observe a connection that just became ``active`` (a dict without secrets)."""


@hookspec
def connection_revoked(connection):
    """Observe a connection that was deleted, after any revocation at the provider."""


@hookspec
def connection_failed(connection, reason):
    """Observe a connection that moved to ``error`` (``reason`` is a short, secret-free text)."""

"""Hook specifications: the whole contract between the core and a plugin.

A plugin is a module (or object) with functions marked ``@hookimpl`` whose
names are hook names below; it may implement any subset, and may accept any
subset of a hook's arguments. Arguments only ever grow (new ones are added,
none renamed or removed), so a plugin written today keeps working. A
``@hookimpl`` whose name is not a hook here stops start-up.

``docs/plugins.md`` documents each hook with its signature and an example;
``tests/test_hookspecs_documented.py`` fails when one lacks either a section
there or a ``test_hook_<name>`` test.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("connect_service")
hookimpl = pluggy.HookimplMarker("connect_service")


@hookspec
def register_connection_types():
    """Return a list of ``ConnectionType`` subclasses this plugin contributes (called once at start-up)."""


@hookspec
def connection_activated(connection):
    """Observe a connection that just became ``active`` (``connection`` is its public view, without secrets)."""


@hookspec
def connection_revoked(connection):
    """Observe a connection that was deleted, after any revocation at the provider (public view, no secrets)."""


@hookspec
def connection_failed(connection, reason):
    """Observe a connection that moved to ``error``; ``reason`` is a short, secret-free text."""

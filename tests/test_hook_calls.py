"""Hooks are called through pluggy with keyword arguments (connect_service.plugins).

So an implementation may accept any subset of a hook's arguments, and an
argument added to a hook later reaches the implementations that ask for it.
"""
import inspect
import types

import pluggy
import pytest

from marshmallow import Schema

from connect_service import ConnectionType, fields, hookimpl, hookspecs
from connect_service.plugins import OBSERVER_HOOKS, PROJECT_NAME, each_implementation, get_plugin_manager
from connect_service.testing import make_config


class KeyConfig(Schema):
    api_key = fields.Secret(required=True)


class Minimal(ConnectionType):
    name = "tests.hookcalls.Minimal"
    title = "Minimal"
    description = "A type registered by an implementation that takes no arguments"
    schema = KeyConfig


class Complete(ConnectionType):
    name = "tests.hookcalls.Complete"
    title = "Complete"
    description = "A type registered by an implementation that takes every argument"
    schema = KeyConfig


def spec_arguments(hook: str) -> list[str]:
    return list(inspect.signature(getattr(hookspecs, hook)).parameters)


def plugin(name: str, hook: str, argnames: list[str], calls: list, returns=None) -> types.ModuleType:
    """A plugin module implementing ``hook`` with exactly ``argnames`` (recording what it was given)."""
    module = types.ModuleType(name)
    namespace: dict = {"calls": calls, "returns": returns, "name": name}
    exec(f"def {hook}({', '.join(argnames)}):\n"
         f"    calls.append((name, dict(locals())))\n"
         f"    return returns\n", namespace)
    setattr(module, hook, hookimpl(namespace[hook]))
    return module


@pytest.mark.parametrize("hook", OBSERVER_HOOKS)
def test_observer_implementations_with_no_or_all_arguments_both_run(tmp_path, hook):
    calls: list = []
    everything = spec_arguments(hook)
    none_taken = plugin("takes_nothing", hook, [], calls)
    all_taken = plugin("takes_everything", hook, everything, calls)
    registry = get_plugin_manager(make_config(tmp_path), [none_taken, all_taken])
    kwargs = {name: f"value of {name}" for name in everything}
    registry.notify(hook, **kwargs)
    assert calls == [("takes_nothing", {}), ("takes_everything", kwargs)]


def test_register_connection_types_with_no_or_all_arguments_both_count(tmp_path):
    calls: list = []
    hook = "register_connection_types"
    none_taken = plugin("types_nothing", hook, [], calls, returns=[Minimal])
    all_taken = plugin("types_everything", hook, spec_arguments(hook), calls, returns=[Complete])
    registry = get_plugin_manager(make_config(tmp_path), [none_taken, all_taken])
    assert registry.get(Minimal.name) is Minimal and registry.get(Complete.name) is Complete
    assert registry.plugin_of(Minimal.name).name == "types_nothing"
    assert registry.plugin_of(Complete.name).name == "types_everything"
    assert [name for name, _ in calls] == ["types_nothing", "types_everything"]


def test_an_argument_added_to_a_hook_later_reaches_the_plugins_that_ask_for_it():
    """``each_implementation`` leaves argument matching to pluggy: a spec that grows keeps old plugins working."""
    grown = types.ModuleType("grown_specs")
    marker = pluggy.HookspecMarker(PROJECT_NAME)

    def connection_activated(connection, added_later):
        """The spec as it may look one day."""

    grown.connection_activated = marker(connection_activated)
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(grown)
    calls: list = []
    pm.register(plugin("old_plugin", "connection_activated", ["connection"], calls), name="old_plugin")
    pm.register(plugin("new_plugin", "connection_activated", ["connection", "added_later"], calls),
                name="new_plugin")
    for _, call in each_implementation(pm, "connection_activated"):
        call(connection={"id": "c1"}, added_later=42)
    assert calls == [("old_plugin", {"connection": {"id": "c1"}}),
                     ("new_plugin", {"connection": {"id": "c1"}, "added_later": 42})]

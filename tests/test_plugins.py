"""The plugin system: hooks, the registry, the ConnectionType contract, the built-in catalogue,
GET /v1/connection-types, `connect-service plugins`, and the third-party path through a real
pip-installed distribution (tests/plugins/acme_helpdesk)."""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import json
import logging
import re
import subprocess
import sys
import textwrap
import tomllib
import types
import typing
from pathlib import Path

import pytest
from marshmallow import Schema, ValidationError, validate

import connect_service
from connect_service import ConnectionType, OAuth2Provider, fields, form_description, hookimpl
from connect_service.app import create_app
from connect_service.config import ConfigError
from connect_service.plugins import PluginError, get_plugin_manager
from connect_service.testing import connection_requirement, make_config

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "tests" / "plugins" / "acme_helpdesk"
SAMPLE_DIST = "acme-helpdesk"
SAMPLE_TYPE = "acme.connections.Helpdesk"
HTTP_API_KEY = "dynamiq.connections.HttpApiKey"


def make_plugin(name: str, **hooks) -> types.ModuleType:
    """A throw-away plugin module; each keyword is a hook implementation (marked here)."""
    module = types.ModuleType(name)
    for hook_name, function in hooks.items():
        setattr(module, hook_name, hookimpl(function))
    return module


def types_plugin(name: str, *classes) -> types.ModuleType:
    return make_plugin(name, register_connection_types=lambda: list(classes))


class TicketsConfig(Schema):
    url = fields.Url(required=True)
    api_key = fields.Secret(required=True)


class Tickets(ConnectionType):
    name = "example.connections.Tickets"
    title = "Example Tickets"
    schema = TicketsConfig

    def validate(self, config):
        if not config["api_key"].startswith("tk_"):
            raise ValidationError("must start with tk_", "api_key")


# --- hooks: one test_hook_<name> per hook (tests/test_hookspecs_documented.py checks this) ---------------------

@pytest.fixture
def tickets_plugin():
    return types_plugin("example_tickets", Tickets)


class TestRegisterConnectionTypes:
    @pytest.fixture
    def connect_plugins(self, tickets_plugin):
        return [tickets_plugin]

    def test_hook_register_connection_types(self, connect):
        assert connect.registry.get(Tickets.name) is Tickets
        assert connect.registry.plugin_of(Tickets.name).name == "example_tickets"
        listed = {t["name"]: t for t in connect.connection_types()}
        assert listed[Tickets.name]["title"] == "Example Tickets"
        app = connect.create_app_with_requirements([connection_requirement("tickets", Tickets.name)])
        token = connect.token(app, "u1")
        rid = connect.requirement_id(app, "tickets")
        bad = connect.submit_credentials(token, rid, Tickets.name, {"url": "https://t.example.com", "api_key": "x"})
        assert bad.status_code == 400
        assert bad.get_json()["error"]["details"] == {"config.api_key": "must start with tk_"}
        ok = connect.submit_credentials(token, rid, Tickets.name, {"url": "https://t.example.com", "api_key": "tk_1"})
        assert ok.status_code == 201, ok.get_json()
        assert connect.statuses(token) == {rid: "completed"}


def _submit_api_key(connect, user="u1", api_key="secret-key-123"):
    app = connect.create_app_with_requirements([connection_requirement("helpdesk", HTTP_API_KEY)])
    token = connect.token(app, user)
    rid = connect.requirement_id(app, "helpdesk")
    r = connect.submit_credentials(token, rid, HTTP_API_KEY, {"url": "https://h.example.com", "api_key": api_key})
    assert r.status_code == 201, r.get_json()
    return app


def test_hook_connection_activated(connect):
    """Fires on credential submission (and resubmission) with the public view: no secrets."""
    app = _submit_api_key(connect)
    calls = connect.hooks.of("connection_activated")
    assert len(calls) == 1
    conn = calls[0]["connection"]
    assert conn["type"] == HTTP_API_KEY and conn["status"] == "active" and conn["customer_id"] == "u1"
    assert conn["settings"] == {"url": "https://h.example.com"}
    assert "secret-key-123" not in json.dumps(calls)
    assert conn["id"] == connect.connection(app, "u1", "helpdesk")["id"]


def test_hook_connection_failed(connect):
    """Fires when core code moves a connection to ``error`` (connections.mark_error)."""
    from connect_service.connections import mark_error
    from connect_service.db import database
    from connect_service.models import Connection

    app = _submit_api_key(connect)
    conn_id = connect.connection(app, "u1", "helpdesk")["id"]
    with connect.app.app_context(), database.connection_context():
        mark_error(Connection.get_by_id(conn_id), "the provider refused the refresh token")
    calls = connect.hooks.of("connection_failed")
    assert len(calls) == 1
    assert calls[0]["reason"] == "the provider refused the refresh token"
    assert calls[0]["connection"]["id"] == conn_id and calls[0]["connection"]["status"] == "error"
    assert "secret-key-123" not in json.dumps(calls)


def test_hook_connection_revoked(connect):
    """Fires after DELETE /v1/connections/{id} removed the row."""
    app = _submit_api_key(connect)
    conn_id = connect.connection(app, "u1", "helpdesk")["id"]
    r = connect.client.delete(f"/v1/connections/{conn_id}", headers=connect.auth)
    assert r.status_code == 204, r.get_json()
    calls = connect.hooks.of("connection_revoked")
    assert [c["connection"]["id"] for c in calls] == [conn_id]
    assert "secret-key-123" not in json.dumps(calls)
    assert connect.connection(app, "u1", "helpdesk") is None


class TestObserverIsolation:
    @pytest.fixture
    def connect_plugins(self):
        def connection_activated(connection):
            raise RuntimeError("webhook endpoint down")
        return [make_plugin("flaky_observer", connection_activated=connection_activated)]

    def test_a_failing_observer_neither_fails_the_request_nor_silences_others(self, connect, caplog):
        with caplog.at_level(logging.ERROR, logger="connect_service.plugins"):
            _submit_api_key(connect)
        assert len(connect.hooks.of("connection_activated")) == 1
        assert "plugin 'flaky_observer' raised in connection_activated" in caplog.text


def test_observer_hooks_cannot_be_wrappers(tmp_path):
    def connection_failed(connection, reason):
        yield

    plugin = types.ModuleType("wrapping")
    plugin.connection_failed = hookimpl(wrapper=True)(connection_failed)
    with pytest.raises(PluginError, match="wrapping.*connection_failed is an observer hook"):
        get_plugin_manager(make_config(tmp_path), [plugin])


# --- start-up failures ----------------------------------------------------------------------------------------

def test_misspelt_hook_implementation_stops_start_up(tmp_path):
    typo = make_plugin("typo_plugin", register_conection_types=lambda: [Tickets])
    with pytest.raises(PluginError) as exc:
        create_app(make_config(tmp_path), plugins=[typo])
    message = str(exc.value)
    assert "typo_plugin" in message and "register_conection_types" in message
    assert "register_connection_types" in message  # lists the hooks that do exist
    assert isinstance(exc.value, ConfigError)  # the CLI prints it as one line and exits 2


def test_hook_implementation_with_unknown_argument_stops_start_up(tmp_path):
    bad = make_plugin("bad_args", connection_failed=lambda connection, why: None)
    with pytest.raises(PluginError, match="bad_args.*why"):
        get_plugin_manager(make_config(tmp_path), [bad])


def test_duplicate_type_names_stop_start_up_naming_both_plugins(tmp_path):
    first, second = types_plugin("tickets_one", Tickets), types_plugin("tickets_two", Tickets)
    with pytest.raises(PluginError) as exc:
        create_app(make_config(tmp_path), plugins=[first, second])
    assert str(exc.value).startswith(f"connection type '{Tickets.name}' is registered twice")
    assert "plugin tickets_one" in str(exc.value) and "plugin tickets_two" in str(exc.value)


def test_duplicate_of_a_built_in_names_the_built_in_distribution(tmp_path):
    class Shadow(ConnectionType):
        name = HTTP_API_KEY
        title = "Shadow"
        schema = TicketsConfig

    with pytest.raises(PluginError) as exc:
        get_plugin_manager(make_config(tmp_path), [types_plugin("shadow", Shadow)])
    assert "by plugin http (connect-service " in str(exc.value)
    assert "by plugin shadow (not from an installed distribution)" in str(exc.value)


@pytest.mark.parametrize("returned, message", [
    (lambda: [object], "returned <class 'object'>, not a ConnectionType subclass"),
    (lambda: Tickets, "must return a list of ConnectionType subclasses"),
    (lambda: "dynamiq.connections.Nope", "must return a list of ConnectionType subclasses"),
])
def test_register_connection_types_must_return_classes(tmp_path, returned, message):
    with pytest.raises(PluginError, match="plugin odd .*" + re.escape(message)):
        get_plugin_manager(make_config(tmp_path), [make_plugin("odd", register_connection_types=returned)])


def test_a_plugin_may_return_nothing(tmp_path):
    registry = get_plugin_manager(make_config(tmp_path), [make_plugin("quiet", register_connection_types=lambda: None)])
    assert HTTP_API_KEY in registry.types


def test_a_plugin_object_already_loaded_through_its_entry_point_is_not_registered_twice(tmp_path):
    import connect_plugins.http_api

    registry = get_plugin_manager(make_config(tmp_path), [connect_plugins.http_api])
    assert registry.plugin_of(HTTP_API_KEY).name == "http"


# --- entry points (fake distributions on sys.path: importlib.metadata finds them like installed ones) ---------

@pytest.fixture
def fake_dist(tmp_path, monkeypatch):
    """Write ``<dist>-0.1.dist-info`` (with a connect_service entry point) and a module into a sys.path folder."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    created: list[str] = []

    def write(dist: str, ep_name: str, module: str, source: str):
        info = site / f"{dist}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[connect_service]\n{ep_name} = {module}\n")
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        created.append(module)
        importlib.invalidate_caches()

    yield write
    for module in created:
        sys.modules.pop(module, None)


def test_a_plugin_that_fails_to_import_stops_start_up_naming_it(tmp_path, fake_dist):
    fake_dist("broken-plugin", "broken", "broken_plugin_mod", "import not_a_module_anywhere\n")
    with pytest.raises(PluginError) as exc:
        get_plugin_manager(make_config(tmp_path))
    assert "plugin broken (broken-plugin 0.1) failed to import broken_plugin_mod" in str(exc.value)
    assert "not_a_module_anywhere" in str(exc.value)


def test_a_disabled_plugin_is_not_even_imported(tmp_path, fake_dist):
    fake_dist("broken-plugin", "broken", "broken_plugin_mod2", "raise RuntimeError('imported')\n")
    registry = get_plugin_manager(make_config(tmp_path, disabled_plugins=["broken"]))
    assert "broken_plugin_mod2" not in sys.modules
    assert HTTP_API_KEY in registry.types


def test_two_distributions_declaring_one_plugin_name_stop_start_up(tmp_path, fake_dist):
    body = "from connect_service import hookimpl\n"
    fake_dist("first-dist", "same_name", "same_name_a", body)
    fake_dist("second-dist", "same_name", "same_name_b", body)
    with pytest.raises(PluginError, match="'same_name' is declared by two distributions: "):
        get_plugin_manager(make_config(tmp_path))


def test_entry_point_plugin_types_are_attributed_to_their_distribution(tmp_path, fake_dist):
    fake_dist("widgets-plugin", "widgets", "widgets_plugin_mod", """
        from marshmallow import Schema
        from connect_service import ConnectionType, fields, hookimpl

        class Widget(ConnectionType):
            name = "example.connections.Widget"
            title = "Widget"
            schema = Schema.from_dict({"token": fields.Secret(required=True)})

        @hookimpl
        def register_connection_types():
            return [Widget]
    """)
    registry = get_plugin_manager(make_config(tmp_path))
    info = registry.plugin_of("example.connections.Widget")
    assert (info.name, info.distribution, info.version) == ("widgets", "widgets-plugin", "0.1")


def test_disabled_plugins_setting_disables_by_plugin_name(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="connect_service.plugins"):
        registry = get_plugin_manager(make_config(tmp_path, disabled_plugins=["databases", "tickets", "no_such"]),
                                      [types_plugin("tickets", Tickets)])
    assert "dynamiq.connections.PostgreSQL" not in registry.types
    assert Tickets.name not in registry.types
    assert HTTP_API_KEY in registry.types
    assert "disabled_plugins names no_such" in caplog.text


def test_disabled_plugins_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CONNECT_DISABLED_PLUGINS", "api_keys, databases")
    app = create_app(make_config(tmp_path))
    names = set(app.extensions["connect_registry"].types)
    assert HTTP_API_KEY in names
    assert not names & {"dynamiq.connections.OpenAI", "dynamiq.connections.AWS", "dynamiq.connections.MySQL"}


# --- the ConnectionType contract ------------------------------------------------------------------------------

def test_public_plugin_api_is_exported_and_typed():
    for name in ("ConnectionType", "OAuth2Provider", "ValidationError", "form_description", "hookimpl", "fields"):
        assert name in connect_service.__all__ and hasattr(connect_service, name)
    assert importlib.resources.files("connect_service").joinpath("py.typed").is_file()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["connect_service"]
    hints = typing.get_type_hints(ConnectionType, include_extras=True)
    assert hints["auth"] == typing.ClassVar[typing.Literal["credentials", "oauth2", "action_account"]]
    assert hints["schema"] == typing.ClassVar[typing.Optional[type[Schema]]]


class _Base(ConnectionType):
    title = "T"
    schema = TicketsConfig


@pytest.mark.parametrize("attrs, message", [
    ({"name": ""}, "`name` must be a non-empty string"),
    ({"name": "has spaces"}, "must be 1-200 letters"),
    ({"name": "x.Y", "title": None}, "`title` must be a non-empty string"),
    ({"name": "x.Y", "auth": "magic"}, "`auth` must be one of credentials, oauth2, action_account"),
    ({"name": "x.Y", "schema": None}, "a credentials type needs a `schema`"),
    ({"name": "x.Y", "schema": dict}, "`schema` must be a marshmallow Schema subclass"),
    ({"name": "x.Y", "auth": "oauth2"}, "oauth2 types must declare `connector_name`"),
    ({"name": "x.Y", "auth": "oauth2", "connector_name": "x"}, "oauth2 types need a `provider`"),
    ({"name": "x.Y", "auth": "action_account"}, "action_account types must declare `connector_name`"),
])
def test_check_definition_names_the_problem(tmp_path, attrs, message):
    cls = type("Broken", (_Base,), dict(attrs))
    with pytest.raises(TypeError, match=re.escape(message)):
        cls.check_definition()
    with pytest.raises(PluginError, match="plugin broken_def "):
        get_plugin_manager(make_config(tmp_path), [types_plugin("broken_def", cls)])


def test_valid_definitions_pass_and_credentials_types_get_their_own_connector_name():
    class Oauthy(ConnectionType):
        name = "x.Oauthy"
        title = "O"
        auth = "oauth2"
        connector_name = "oauthy"
        provider = OAuth2Provider(authorize_url="https://o.example.com/a", token_url="https://o.example.com/t")

    Oauthy.check_definition()
    Tickets.check_definition()
    assert Tickets.connector_name == Tickets.name
    assert Oauthy.form() == {"fields": []} and Oauthy.secret_fields() == []


def test_load_config_runs_the_schema_then_validate():
    assert Tickets.load_config({"url": "https://t.example.com", "api_key": " tk_1\n"}) == {
        "url": "https://t.example.com", "api_key": "tk_1"}
    with pytest.raises(ValidationError) as exc:
        Tickets.load_config({"url": "https://t.example.com", "api_key": "nope"})
    assert exc.value.messages == {"api_key": ["must start with tk_"]}
    with pytest.raises(ValidationError) as exc:
        Tickets.load_config({"url": "https://t.example.com", "api_key": "tk_1", "extra": 1})
    assert "extra" in exc.value.messages


def test_describe_is_what_the_api_lists():
    assert Tickets.describe() == {
        "name": Tickets.name, "title": "Example Tickets", "auth": "credentials", "connector_name": Tickets.name,
        "description": "", "form": form_description(TicketsConfig)}


def test_form_description_format():
    class Everything(Schema):
        plan = fields.String(required=True, validate=validate.OneOf(["free", "pro"]),
                             metadata={"label": "Plan", "help": "Your plan"})
        retries = fields.Integer(load_default=3, validate=validate.Range(min=0, max=10))
        ratio = fields.Float()
        verbose = fields.Boolean(load_default=False)
        endpoint = fields.Url(metadata={"placeholder": "https://x.example.com"})
        email = fields.Email()
        token = fields.Secret(required=True, data_key="apiToken")
        headers = fields.Dict(metadata={"secret": True})
        scopes = fields.List(fields.String(), load_default=list)
        nested = fields.Nested(TicketsConfig)
        computed = fields.String(dump_only=True)

    form = form_description(Everything)
    by_name = {f["name"]: f for f in form["fields"]}
    assert list(by_name) == ["plan", "retries", "ratio", "verbose", "endpoint", "email", "apiToken", "headers",
                             "scopes", "nested"]
    assert by_name["plan"] == {"name": "plan", "label": "Plan", "type": "string", "input": "select",
                               "secret": False, "required": True, "help": "Your plan", "choices": ["free", "pro"]}
    assert by_name["retries"] == {"name": "retries", "label": "Retries", "type": "integer", "input": "number",
                                  "secret": False, "required": False, "min": 0, "max": 10, "default": 3}
    assert (by_name["ratio"]["type"], by_name["ratio"]["input"]) == ("number", "number")
    assert (by_name["verbose"]["type"], by_name["verbose"]["input"], by_name["verbose"]["default"]) == (
        "boolean", "checkbox", False)
    assert by_name["endpoint"]["type"] == "url" and by_name["endpoint"]["placeholder"] == "https://x.example.com"
    assert (by_name["email"]["type"], by_name["email"]["input"]) == ("email", "email")
    assert by_name["apiToken"]["label"] == "Token" and by_name["apiToken"]["input"] == "password"
    assert by_name["apiToken"]["secret"] is True and by_name["apiToken"]["required"] is True
    assert by_name["headers"] == {"name": "headers", "label": "Headers", "type": "object", "input": "json",
                                  "secret": True, "required": False}
    assert "default" not in by_name["scopes"]  # callable defaults are not shown
    assert by_name["nested"]["type"] == "object"
    json.dumps(form)  # JSON all the way down


# --- fields -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["https://api.example.com/v1", "http://localhost:8080", "http://10.0.0.1/x"])
def test_url_field_accepts_http_and_https(value):
    assert fields.Url().deserialize(value) == value


@pytest.mark.parametrize("value", ["ftp://files.example.com", "file:///etc/passwd", "javascript:alert(1)",
                                   "gopher://x.example.com", "data:text/plain,hi", "api.example.com",
                                   "//api.example.com", "https://user:pw@api.example.com", "https://tok@api.example.com"])
def test_url_field_rejects_other_schemes_and_credentials(value):
    with pytest.raises(ValidationError):
        fields.Url().deserialize(value)


def test_secret_field_strips_and_rejects_blank():
    assert fields.Secret().deserialize("  key\n") == "key"
    for blank in ("", "   ", "\n"):
        with pytest.raises(ValidationError, match="cannot be blank"):
            fields.Secret().deserialize(blank)
    assert fields.Secret().metadata["secret"] is True


@pytest.mark.parametrize("value, expected", [("db.example.com", "db.example.com"), ("DB.Example.com.", "db.example.com"),
                                             ("localhost", "localhost"), ("10.0.0.5", "10.0.0.5"),
                                             ("[::1]", "::1"), ("my_host-1", "my_host-1")])
def test_host_field_accepts(value, expected):
    assert fields.Host().deserialize(value) == expected


@pytest.mark.parametrize("value", ["postgres://db.example.com", "db.example.com:5432", "db.example.com/x", "a b",
                                   "-bad.example.com", "", "x" * 64 + ".com"])
def test_host_field_rejects(value):
    with pytest.raises(ValidationError):
        fields.Host().deserialize(value)


def test_port_field():
    assert fields.Port().deserialize("5432") == 5432
    for bad in (0, 65536, -1, "http"):
        with pytest.raises(ValidationError):
            fields.Port().deserialize(bad)


# --- the built-in catalogue: one schema table, every built-in type in it ----------------------------------------

BUILT_IN_MODULES = {"http", "api_keys", "databases"}
API_KEY_ONLY = ["OpenAI", "Anthropic", "Gemini", "Mistral", "Cohere", "Pinecone"]
# name -> (required fields, secret fields, URL fields, a valid config, defaults the schema fills in)
BUILT_INS = {
    "dynamiq.connections.HttpApiKey": ({"url", "api_key"}, {"api_key"}, {"url"},
                                       {"url": "https://api.example.com", "api_key": "k1"}, {}),
    "dynamiq.connections.Http": ({"url"}, {"headers"}, {"url"},
                                 {"url": "https://hook.example.com", "headers": {"X-Token": "t"}},
                                 {"method": "POST"}),
    **{f"dynamiq.connections.{name}": ({"api_key"}, {"api_key"}, set(), {"api_key": "key-1"}, {})
       for name in API_KEY_ONLY},
    "dynamiq.connections.Qdrant": ({"url", "api_key"}, {"api_key"}, {"url"},
                                   {"url": "https://q.example.com:6333", "api_key": "qk"}, {}),
    "dynamiq.connections.AWS": ({"access_key_id", "secret_access_key"}, {"secret_access_key"}, set(),
                                {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "wJalrXUtnFEMI/K7MDENG"},
                                {"region": "us-east-1"}),
    "dynamiq.connections.PostgreSQL": ({"host", "database", "user", "password"}, {"password"}, set(),
                                       {"host": "db.example.com", "database": "app", "user": "ro", "password": "pw"},
                                       {"port": 5432}),
    "dynamiq.connections.MySQL": ({"host", "database", "user", "password"}, {"password"}, set(),
                                  {"host": "db.example.com", "database": "app", "user": "ro", "password": "pw"},
                                  {"port": 3306}),
}


@pytest.fixture(scope="module")
def builtin_registry(tmp_path_factory):
    return get_plugin_manager(make_config(tmp_path_factory.mktemp("builtins")))


def test_every_built_in_type_has_a_schema_test(builtin_registry):
    mine = {name for name, info in builtin_registry.plugins.items() if info.name in BUILT_IN_MODULES}
    assert mine == set(BUILT_INS)
    for name in mine:
        assert builtin_registry.plugin_of(name).distribution == "connect-service"


@pytest.mark.parametrize("type_name", sorted(BUILT_INS))
def test_built_in_schema(builtin_registry, type_name):
    required, secret, urls, valid, defaults = BUILT_INS[type_name]
    cls = builtin_registry.get(type_name)
    assert cls.auth == "credentials" and cls.connector_name == type_name
    form = {f["name"]: f for f in cls.form()["fields"]}
    assert {n for n, f in form.items() if f["required"]} == required
    assert {n for n, f in form.items() if f["secret"]} == secret == set(cls.secret_fields())
    for name, f in form.items():
        if f["secret"] and f["type"] not in ("object", "list"):
            assert f["input"] == "password", name
        elif not f["secret"]:
            assert f["input"] != "password", name
    assert {n for n, f in form.items() if f["type"] == "url"} == urls
    assert {n: f["default"] for n, f in form.items() if "default" in f} == defaults
    assert cls.load_config(valid) == {**defaults, **valid}
    with pytest.raises(ValidationError) as exc:
        cls.load_config({})
    assert set(exc.value.messages) == required
    for name in secret - {"headers"}:
        with pytest.raises(ValidationError) as exc:
            cls.load_config({**valid, name: "   "})
        assert exc.value.messages == {name: ["cannot be blank"]}
    for name in urls:
        for bad in ("ftp://x.example.com", "file:///etc/passwd", "javascript:alert(1)"):
            with pytest.raises(ValidationError) as exc:
                cls.load_config({**valid, name: bad})
            assert set(exc.value.messages) == {name}
        assert cls.load_config({**valid, name: "http://localhost:9000/v1"})[name] == "http://localhost:9000/v1"


@pytest.mark.parametrize("type_name", ["dynamiq.connections.PostgreSQL", "dynamiq.connections.MySQL"])
def test_database_fields(builtin_registry, type_name):
    cls = builtin_registry.get(type_name)
    base = {"host": "db.example.com", "database": "app", "user": "ro", "password": "pw"}
    assert cls.load_config({**base, "port": "6543"})["port"] == 6543  # forms send strings
    for field_name, bad in [("port", 0), ("port", 70000), ("host", "postgres://db.example.com"),
                            ("host", "db.example.com:5432"), ("database", "  "), ("user", "")]:
        with pytest.raises(ValidationError) as exc:
            cls.load_config({**base, field_name: bad})
        assert set(exc.value.messages) == {field_name}


def test_aws_fields(builtin_registry):
    cls = builtin_registry.get("dynamiq.connections.AWS")
    base = BUILT_INS["dynamiq.connections.AWS"][3]
    assert cls.load_config({**base, "region": "eu-central-1"})["region"] == "eu-central-1"
    assert cls.load_config({**base, "region": "us-gov-west-1"})["region"] == "us-gov-west-1"
    for field_name, bad in [("region", "Mars"), ("region", "us_east_1"), ("access_key_id", "akia-lower"),
                            ("access_key_id", "SHORT")]:
        with pytest.raises(ValidationError) as exc:
            cls.load_config({**base, field_name: bad})
        assert set(exc.value.messages) == {field_name}


def test_http_fields(builtin_registry):
    cls = builtin_registry.get("dynamiq.connections.Http")
    base = {"url": "https://hook.example.com"}
    assert cls.load_config({**base, "method": "GET"})["method"] == "GET"
    form = {f["name"]: f for f in cls.form()["fields"]}
    assert form["method"]["choices"] == ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    for field_name, bad in [("method", "TRACE"), ("headers", {"X-A": "1\r\nInjected: yes"}),
                            ("headers", {"bad name": "x"}), ("headers", ["not", "an", "object"]),
                            ("headers", {"X-A": 1})]:
        with pytest.raises(ValidationError) as exc:
            cls.load_config({**base, field_name: bad})
        assert set(exc.value.messages) == {field_name}


def test_every_built_in_accepts_credentials_through_the_api_and_keeps_secrets_out_of_public_views(connect):
    requirements = [connection_requirement(f"r{i}", name) for i, name in enumerate(sorted(BUILT_INS))]
    app = connect.create_app_with_requirements(requirements)
    token = connect.token(app, "u1")
    for i, name in enumerate(sorted(BUILT_INS)):
        _, secret, _, valid, defaults = BUILT_INS[name]
        r = connect.submit_credentials(token, connect.requirement_id(app, f"r{i}"), name, valid)
        assert r.status_code == 201, (name, r.get_json())
        assert connect.stored_config(app, "u1", f"r{i}") == {**defaults, **valid}
        public = connect.connection(app, "u1", f"r{i}")["settings"]
        assert set(public) == set({**defaults, **valid}) - secret, name
    assert set(connect.statuses(token).values()) == {"completed"}


# --- GET /v1/connection-types -----------------------------------------------------------------------------------

def test_connection_types_needs_an_access_key_and_refuses_a_connect_token(connect):
    """Seed 001: a connect token "grants no other API access" than /v1/connect/* (issue 14, item 8)."""
    app = connect.create_app_with_requirements([connection_requirement("k", HTTP_API_KEY)])
    token = connect.token(app, "u1")
    for headers in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Bearer ak_" + "x" * 40},
                    {"Authorization": f"Basic {connect.access_key}"}, connect.bearer(token)):
        r = connect.client.get("/v1/connection-types?cursor=!!", headers=headers)
        assert r.status_code == 401
        assert r.get_json() == {"error": {"code": "unauthorized", "message": "Unauthorized"}}
    by_key = connect.client.get("/v1/connection-types", headers=connect.auth)
    assert by_key.status_code == 200
    assert by_key.get_json()["data"]


def test_connection_types_lists_every_registered_type(connect):
    body = connect.client.get("/v1/connection-types", query_string={"limit": 200}, headers=connect.auth).get_json()
    assert body["next_cursor"] is None
    assert body["data"] == connect.registry.describe()
    assert [t["name"] for t in body["data"]] == sorted(connect.registry.types)
    item = next(t for t in body["data"] if t["name"] == HTTP_API_KEY)
    assert item == {
        "name": HTTP_API_KEY, "title": "HTTP API key", "auth": "credentials", "connector_name": HTTP_API_KEY,
        "description": "An HTTP API URL and the API key that authorizes requests to it.",
        "form": {"fields": [
            {"name": "url", "label": "API URL", "type": "url", "input": "url", "secret": False, "required": True,
             "placeholder": "https://api.example.com"},
            {"name": "api_key", "label": "API key", "type": "string", "input": "password", "secret": True,
             "required": True, "max_length": 10000},
        ]},
    }


def test_connection_types_pages_with_cursor_and_limit(connect):
    everything = connect.connection_types()
    seen, query = [], {"limit": 3}
    while True:
        body = connect.client.get("/v1/connection-types", query_string=query, headers=connect.auth).get_json()
        assert len(body["data"]) <= 3
        seen += body["data"]
        if body["next_cursor"] is None:
            break
        query["cursor"] = body["next_cursor"]
    assert seen == everything
    for query, field_name in (({"cursor": "%%%"}, "cursor"), ({"limit": 0}, "limit"), ({"limit": "x"}, "limit")):
        r = connect.client.get("/v1/connection-types", query_string=query, headers=connect.auth)
        assert r.status_code == 400
        assert set(r.get_json()["error"]["details"]) == {field_name}


def test_connection_types_are_in_the_openapi_document(connect):
    doc = connect.client.get("/openapi.json").get_json()
    op = doc["paths"]["/v1/connection-types"]["get"]
    assert op["security"] == [{"accessKey": []}]  # a connect token grants no access beyond /v1/connect/* (seed 001)
    assert {p["name"] for p in op["parameters"]} >= {"cursor", "limit"}


# --- connect-service plugins ------------------------------------------------------------------------------------

def test_plugins_command_prints_the_api_items_plus_their_plugin_and_distribution(connect):
    from connect_service.cli import cli

    result = connect.app.test_cli_runner().invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [{k: v for k, v in line.items() if k not in ("plugin", "distribution", "version")} for line in lines] \
        == connect.connection_types()
    by_name = {line["name"]: line for line in lines}
    assert by_name[HTTP_API_KEY]["plugin"] == "http"
    assert by_name[HTTP_API_KEY]["distribution"] == "connect-service"
    assert by_name[HTTP_API_KEY]["version"] == importlib.metadata.version("connect-service")


# --- the third-party path: tests/plugins/acme_helpdesk, pip-installed into this environment -------------------

@pytest.fixture(scope="session")
def sample_plugin_installed():
    """The sample plugin as an installed distribution: scripts/test.sh installs it (-e); otherwise pip does it here."""
    try:
        return importlib.metadata.distribution(SAMPLE_DIST)
    except importlib.metadata.PackageNotFoundError:
        pass
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                    str(SAMPLE_DIR)], check=True, timeout=300)
    importlib.invalidate_caches()
    return importlib.metadata.distribution(SAMPLE_DIST)


@pytest.mark.usefixtures("sample_plugin_installed")
class TestThirdPartyPlugin:
    def test_it_is_an_installed_distribution_with_our_entry_point(self, sample_plugin_installed):
        eps = [ep for ep in sample_plugin_installed.entry_points if ep.group == "connect_service"]
        assert [(ep.name, ep.value) for ep in eps] == [("acme_helpdesk", "acme_helpdesk")]
        assert SAMPLE_DIR.joinpath("pyproject.toml").is_file()

    def test_the_core_does_not_know_it(self):
        for path in [*ROOT.joinpath("connect_service").rglob("*.py"), *ROOT.joinpath("plugins").rglob("*.py"),
                     ROOT / "pyproject.toml"]:
            text = path.read_text().lower()
            assert "acme_helpdesk" not in text and "acme-helpdesk" not in text and SAMPLE_TYPE.lower() not in text, path

    def test_its_type_is_listed_by_the_api_and_attributed_to_it(self, connect):
        item = next(t for t in connect.connection_types() if t["name"] == SAMPLE_TYPE)
        assert item["auth"] == "credentials" and item["title"] == "Acme Helpdesk"
        assert [f["name"] for f in item["form"]["fields"]] == ["url", "api_key", "team"]
        info = connect.registry.plugin_of(SAMPLE_TYPE)
        assert (info.name, info.distribution) == ("acme_helpdesk", SAMPLE_DIST)

    def test_it_accepts_credentials_with_no_core_change(self, connect):
        app = connect.create_app_with_requirements([connection_requirement("desk", SAMPLE_TYPE)])
        token = connect.token(app, "alice")
        rid = connect.requirement_id(app, "desk")
        bad = connect.submit_credentials(token, rid, SAMPLE_TYPE, {"url": "https://a.example.com", "api_key": "x1"})
        assert bad.status_code == 400
        assert bad.get_json()["error"]["details"] == {"config.api_key": "must start with hd_ (an Acme Helpdesk API key)"}
        ok = connect.submit_credentials(token, rid, SAMPLE_TYPE, {"url": "https://a.example.com", "api_key": "hd_9"})
        assert ok.status_code == 201, ok.get_json()
        assert connect.statuses(token) == {rid: "completed"}
        assert connect.connection(app, "alice", "desk")["settings"] == {"url": "https://a.example.com",
                                                                         "team": "support"}

    def test_the_plugins_command_names_its_distribution(self, connect):
        from connect_service.cli import cli

        result = connect.app.test_cli_runner().invoke(cli, ["plugins"])
        line = next(json.loads(x) for x in result.output.splitlines() if SAMPLE_TYPE in x)
        assert (line["plugin"], line["distribution"], line["version"]) == ("acme_helpdesk", SAMPLE_DIST, "0.1.0")

    def test_it_can_be_disabled_by_its_plugin_name(self, tmp_path):
        app = create_app(make_config(tmp_path, disabled_plugins=["acme_helpdesk"]))
        assert SAMPLE_TYPE not in app.extensions["connect_registry"].types


def test_installed_distributions_are_read_once_per_installed_set(monkeypatch):
    """create_app asks which distribution each plugin object comes from; the metadata of every installed
    distribution is read once and read again only when the import path or a folder on it changes."""
    import importlib.metadata

    from connect_service import plugins

    reads = []
    real = importlib.metadata.packages_distributions
    monkeypatch.setattr(importlib.metadata, "packages_distributions", lambda: reads.append(1) or real())
    monkeypatch.setattr(plugins, "_DISTRIBUTIONS", {})
    first = plugins._top_level_distributions()
    assert plugins._top_level_distributions() is first and len(reads) == 1
    assert "connect_service" in first  # this project is installed
    installed = plugins._installed_set()
    monkeypatch.setattr(plugins, "_installed_set", lambda: installed + (("/new/site-packages", 1),))
    assert plugins._top_level_distributions() == first and len(reads) == 2

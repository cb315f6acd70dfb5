"""The plugin author kit: pytest fixtures that run connect-service with your plugin registered.

Load it from your plugin's top-level ``conftest.py``::

    pytest_plugins = ["connect_service.testing"]

(or with ``addopts = "-p connect_service.testing"`` under ``[tool.pytest.ini_options]``).
An installed plugin (``pip install -e .``) is found through its entry point like
in production; to register a module that is not installed, override
``connect_plugins``::

    @pytest.fixture
    def connect_plugins():
        import my_plugin
        return [my_plugin]          # registered on top of installed entry points

then in a test::

    from connect_service.testing import connection_requirement

    def test_my_type(connect):
        app = connect.create_app_with_requirements([connection_requirement("crm", "example.connections.Crm")])
        token = connect.token(app, "user-1")
        req_id = connect.requirement_id(app, "crm")
        r = connect.submit_credentials(token, req_id, "example.connections.Crm", {"api_key": "k"})
        assert r.status_code == 201
        assert connect.statuses(token) == {req_id: "completed"}
        assert connect.stored_config(app, "user-1", "crm") == {"api_key": "k"}
        assert connect.hooks.of("connection_activated")[0]["connection"]["type"] == "example.connections.Crm"

Every JSON answer ``connect.client`` receives is checked against the schema
the served ``/openapi.json`` declares for its operation and status
(:class:`ContractClient`), so the document cannot drift from what the service
answers.

Fixtures: ``connect`` (a :class:`ConnectHarness`), ``connect_app`` (the Flask
app), ``connect_config`` (override to change settings, see :func:`make_config`),
``connect_plugins`` (override to add plugin objects).

The database is SQLite in a temporary folder unless ``CONNECT_TEST_DATABASE_URL``
names another (a PostgreSQL database is emptied between tests).
"""
from __future__ import annotations

import atexit
import os
import secrets
import shutil
import sqlite3
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Any

import peewee
import pytest

from .access_keys import create_access_key
from .app import create_app
from .config import generate_key
from .connections import read_settings, to_public
from .db import database, is_postgres
from .extensions import registry
from .hookspecs import hookimpl
from .migrations import migrate
from .models import ALL_MODELS, Connection, Organization
from .testing_contract import ContractClient, check_response, contract  # noqa: F401 (re-exported)

TEST_SECRET_KEY = "test-secret-key-" + "x" * 32


def make_config(tmp_path, **overrides: Any) -> dict[str, Any]:
    """A complete test configuration (SQLite in ``tmp_path`` unless CONNECT_TEST_DATABASE_URL is set)."""
    cfg = {
        "env": "testing",
        "instance_path": str(tmp_path),
        "database_url": os.environ.get("CONNECT_TEST_DATABASE_URL") or f"sqlite:///{tmp_path}/test.db",
        "public_url": "http://connect.test",
        "secret_key": TEST_SECRET_KEY,
        "encryption_keys": [generate_key()],
        "allowed_private_hosts": ["127.0.0.1", "localhost"],
        "proxy_count": 1,
        "rate_limit_tokens_per_minute": 1000,
        "rate_limit_credentials_per_minute": 1000,
        "rate_limit_oauth_starts_per_minute": 1000,
        "rate_limit_oauth_starts_per_address_per_minute": 1000,
        "rate_limit_webhook_per_minute": 1000,
        "log_level": "INFO",
    }
    cfg.update(overrides)
    return cfg


#: a migrated SQLite database per process: a fresh test file gets a copy instead of running every step again
_SQLITE_TEMPLATE: dict[str, str] = {}


def _fresh_sqlite_file() -> str | None:
    """The bound SQLite file when it is new (empty, unopened), else None."""
    path = getattr(database.obj, "database", "")
    if is_postgres() or not path or path == ":memory:" or path.startswith("file:"):
        return None
    if not database.is_closed() or os.path.exists(f"{path}-wal") or not os.path.exists(path):
        return None
    return path if os.path.getsize(path) == 0 else None


def _save_sqlite_template(path: str) -> None:
    folder = tempfile.mkdtemp(prefix="connect-schema-")
    atexit.register(shutil.rmtree, folder, True)
    template = os.path.join(folder, "template.db")
    # the backup API reads through the WAL, so the copy holds every committed step
    with sqlite3.connect(path) as source, sqlite3.connect(template) as target:
        source.backup(target)
    source.close()
    target.close()
    _SQLITE_TEMPLATE["path"] = template


def reset_database() -> None:
    """Empty every table (PostgreSQL) or create them (fresh SQLite file).

    A fresh SQLite file gets a copy of the first one this process migrated (same steps,
    same schema, in a millisecond); the test suite's migrations tests run the steps themselves.
    """
    fresh = _fresh_sqlite_file()
    if fresh and "path" in _SQLITE_TEMPLATE:
        shutil.copyfile(_SQLITE_TEMPLATE["path"], fresh)  # into the existing file: keeps its 0600 mode
        return
    migrate()
    if fresh:
        _save_sqlite_template(fresh)
    if is_postgres():
        # DELETE, children first, in one transaction: a few rows per test, where TRUNCATE's new files per
        # table cost 40 ms a test (DELETE about 3 ms)
        with database.connection_context(), database.atomic():
            for model in reversed(peewee.sort_models(ALL_MODELS)):
                database.execute_sql(f'DELETE FROM "{model._meta.table_name}"')


def connection_requirement(key: str, type_name: str, title: str | None = None, description: str = "") -> dict:
    """A ``connection`` requirement asking for ``type_name``, for :meth:`ConnectHarness.deploy`."""
    return {"key": key, "type": "connection", "title": title or f"{type_name.rsplit('.', 1)[-1]} connection",
            "description": description, "spec": {"type": "connection", "data": {"type": type_name}}}


class HookRecorder:
    """A plugin that records every lifecycle hook call; every test app registers one as ``connect.hooks``.

    ``calls`` is a list of ``(hook name, arguments)``; :meth:`of` filters it.
    """

    def __init__(self, name: str = "connect_service.testing.HookRecorder"):
        self.__name__ = name  # the plugin name the registry uses
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def of(self, hook: str) -> list[dict[str, Any]]:
        """The arguments of every call of ``hook``, oldest first."""
        return [kwargs for name, kwargs in self.calls if name == hook]

    def clear(self) -> None:
        """Forget the calls recorded so far."""
        self.calls.clear()

    @hookimpl
    def connection_activated(self, connection):
        """Record the call (``connect.hooks.of("connection_activated")``)."""
        self.calls.append(("connection_activated", {"connection": connection}))

    @hookimpl
    def connection_revoked(self, connection):
        """Record the call (``connect.hooks.of("connection_revoked")``)."""
        self.calls.append(("connection_revoked", {"connection": connection}))

    @hookimpl
    def connection_failed(self, connection, reason):
        """Record the call (``connect.hooks.of("connection_failed")``)."""
        self.calls.append(("connection_failed", {"connection": connection, "reason": reason}))


@dataclass
class ConnectHarness:
    """A running app plus helpers: org, access key, apps, tokens, submissions, recorded hooks."""

    app: Any
    client: Any
    org_id: str
    access_key: str
    _counter: list = field(default_factory=lambda: [0])
    #: lifecycle hook calls seen by this app
    hooks: HookRecorder = field(default_factory=HookRecorder)

    @property
    def auth(self) -> dict[str, str]:
        """``Authorization`` header with the org's Access Key (management API)."""
        return {"Authorization": f"Bearer {self.access_key}"}

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        """``Authorization`` header for a connect token."""
        return {"Authorization": f"Bearer {token}"}

    @property
    def registry(self):
        """The app's :class:`connect_service.plugins.Registry` (types, plugins, hooks)."""
        with self.app.app_context():
            return registry()

    def connection_types(self) -> list[dict]:
        """``GET /v1/connection-types`` (every page) as the list of its items."""
        items: list[dict] = []
        query: dict[str, Any] = {"limit": 200}
        while True:
            r = self.client.get("/v1/connection-types", query_string=query, headers=self.auth)
            assert r.status_code == 200, r.get_json()
            items += r.get_json()["data"]
            query["cursor"] = r.get_json()["next_cursor"]
            if not query["cursor"]:
                return items

    def create_app(self, visibility: str = "public", **extra: Any) -> dict:
        """Create an app in the org (``POST /v1/apps``); returns its JSON."""
        self._counter[0] += 1
        body = {"name": f"App {self._counter[0]}", "hostname": f"app{self._counter[0]}-{secrets.token_hex(3)}.test",
                "visibility": visibility, **extra}
        r = self.client.post("/v1/apps", json=body, headers=self.auth)
        assert r.status_code == 201, r.get_json()
        return r.get_json()

    def deploy(self, app: dict, requirements: list[dict]) -> dict:
        """Create a workflow version with ``requirements`` and deploy it."""
        r = self.client.post(f"/v1/apps/{app['id']}/versions", json={"requirements": requirements},
                             headers=self.auth)
        assert r.status_code == 201, r.get_json()
        number = r.get_json()["number"]
        r = self.client.post(f"/v1/apps/{app['id']}/versions/{number}/deploy", headers=self.auth)
        assert r.status_code == 200, r.get_json()
        return r.get_json()

    def create_app_with_requirements(self, requirements: list[dict], visibility: str = "public", **extra) -> dict:
        """:meth:`create_app` then :meth:`deploy`; see :func:`connection_requirement`."""
        app = self.create_app(visibility=visibility, **extra)
        self.deploy(app, requirements)
        return app

    def token(self, app: dict, user_id: str) -> str:
        """A connect token for end user ``user_id`` of ``app`` (through the app's host)."""
        headers = {"Host": app["hostname"]}
        if app["visibility"] == "private":
            headers.update(self.auth)
        r = self.client.post("/v1/connect/tokens", json={"user_id": user_id}, headers=headers)
        assert r.status_code == 201, r.get_json()
        return r.get_json()["token"]

    @staticmethod
    def requirement_id(app: dict, key: str) -> str:
        """The public id of the requirement declared with ``key``."""
        return str(uuid.uuid5(uuid.UUID(app["id"]), key))

    def submit_credentials(self, token: str, requirement_id: str, type_name: str, config: dict):
        """``POST /v1/connect/requirements/{id}/credentials``; returns the test response."""
        return self.client.post(f"/v1/connect/requirements/{requirement_id}/credentials",
                                json={"type": type_name, "config": config},
                                headers={"Authorization": f"Bearer {token}"})

    def statuses(self, token: str) -> dict[str, str]:
        """``{requirement id: "completed" | "pending"}`` for the token's user."""
        r = self.client.get("/v1/connect/requirements/statuses", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.get_json()
        return {item["id"]: item["status"] for item in r.get_json()["data"]}

    def _connection_row(self, app: dict, user_id: str, key: str):

        return Connection.get_or_none(Connection.app == app["id"], Connection.customer_id == user_id,
                                      Connection.requirement_id == self.requirement_id(app, key))

    def connection(self, app: dict, user_id: str, key: str) -> dict | None:
        """The public view (no secrets) of the user's connection for a requirement, or None."""
        with self.app.app_context(), database.connection_context():
            row = self._connection_row(app, user_id, key)
            return None if row is None else to_public(row)

    def stored_config(self, app: dict, user_id: str, key: str) -> dict | None:
        """The decrypted settings stored for the user's connection (what the app's backend reads), or None."""
        with self.app.app_context(), database.connection_context():
            row = self._connection_row(app, user_id, key)
            return None if row is None else read_settings(row)


@pytest.fixture
def connect_plugins() -> list:
    """Override to register extra plugin objects (modules) for the test app."""
    return []


@pytest.fixture
def connect_config(tmp_path) -> dict[str, Any]:
    """Override to change settings; see :func:`make_config`."""
    return make_config(tmp_path)


@pytest.fixture
def connect_hooks() -> HookRecorder:
    """The :class:`HookRecorder` registered in the test app (also ``connect.hooks``)."""
    return HookRecorder()


@pytest.fixture
def connect_app(connect_config, connect_plugins, connect_hooks):
    """The Flask app: ``connect_config`` settings, installed plugins plus ``connect_plugins``, a fresh database."""
    app = create_app(connect_config, plugins=[*connect_plugins, connect_hooks])
    with app.app_context():
        reset_database()
    yield app

    if not database.is_closed():
        database.close()
    pool_close = getattr(database.obj, "close_all", None)
    if pool_close:
        pool_close()


@pytest.fixture
def connect(connect_app, connect_hooks) -> ConnectHarness:
    """A :class:`ConnectHarness`: app, test client, an org and its Access Key."""
    with connect_app.app_context(), database.connection_context():
        org = Organization.create(name="Test org")
        _, plaintext = create_access_key(org, "tests")
    client = ContractClient(connect_app, connect_app.response_class)
    return ConnectHarness(app=connect_app, client=client, org_id=org.id, access_key=plaintext,
                          hooks=connect_hooks)

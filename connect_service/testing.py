"""pytest fixtures for plugin authors (and this project's own suite).

In a plugin's ``conftest.py``::

    pytest_plugins = ["connect_service.testing"]

    @pytest.fixture
    def connect_plugins():
        import my_plugin
        return [my_plugin]          # registered on top of installed entry points

then in a test::

    def test_my_type(connect):
        app = connect.create_app_with_requirements([
            {"key": "crm", "type": "connection", "title": "CRM",
             "spec": {"type": "connection", "data": {"type": "acme.connections.Crm"}}},
        ])
        token = connect.token(app, "user-1")
        req_id = connect.requirement_id(app, "crm")
        r = connect.submit_credentials(token, req_id, "acme.connections.Crm", {"api_key": "k"})
        assert r.status_code == 201

The database is SQLite in a temporary folder unless ``CONNECT_TEST_DATABASE_URL``
names another (a PostgreSQL database is emptied between tests).
"""
from __future__ import annotations

import os
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from .config import generate_key

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
        "log_level": "INFO",
    }
    cfg.update(overrides)
    return cfg


def reset_database() -> None:
    """Empty every table (PostgreSQL) or create them (fresh SQLite file)."""
    from .db import database, is_postgres
    from .migrations import migrate
    from .models import ALL_MODELS

    migrate()
    if is_postgres():
        with database.connection_context():
            names = ", ".join(f'"{m._meta.table_name}"' for m in ALL_MODELS)
            database.execute_sql(f"TRUNCATE {names} CASCADE")


@dataclass
class ConnectHarness:
    """A running app plus helpers: org, access key, apps, tokens, submissions."""

    app: Any
    client: Any
    org_id: str
    access_key: str
    _counter: list = field(default_factory=lambda: [0])

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_key}"}

    def create_app(self, visibility: str = "public", **extra: Any) -> dict:
        self._counter[0] += 1
        body = {"name": f"App {self._counter[0]}", "hostname": f"app{self._counter[0]}-{secrets.token_hex(3)}.test",
                "visibility": visibility, **extra}
        r = self.client.post("/v1/apps", json=body, headers=self.auth)
        assert r.status_code == 201, r.get_json()
        return r.get_json()

    def deploy(self, app: dict, requirements: list[dict]) -> dict:
        r = self.client.post(f"/v1/apps/{app['id']}/versions", json={"requirements": requirements},
                             headers=self.auth)
        assert r.status_code == 201, r.get_json()
        number = r.get_json()["number"]
        r = self.client.post(f"/v1/apps/{app['id']}/versions/{number}/deploy", headers=self.auth)
        assert r.status_code == 200, r.get_json()
        return r.get_json()

    def create_app_with_requirements(self, requirements: list[dict], visibility: str = "public", **extra) -> dict:
        app = self.create_app(visibility=visibility, **extra)
        self.deploy(app, requirements)
        return app

    def token(self, app: dict, user_id: str) -> str:
        headers = {"Host": app["hostname"]}
        if app["visibility"] == "private":
            headers.update(self.auth)
        r = self.client.post("/v1/connect/tokens", json={"user_id": user_id}, headers=headers)
        assert r.status_code == 201, r.get_json()
        return r.get_json()["token"]

    @staticmethod
    def requirement_id(app: dict, key: str) -> str:
        return str(uuid.uuid5(uuid.UUID(app["id"]), key))

    def submit_credentials(self, token: str, requirement_id: str, type_name: str, config: dict):
        return self.client.post(f"/v1/connect/requirements/{requirement_id}/credentials",
                                json={"type": type_name, "config": config},
                                headers={"Authorization": f"Bearer {token}"})

    def statuses(self, token: str) -> dict[str, str]:
        r = self.client.get("/v1/connect/requirements/statuses", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.get_json()
        return {item["id"]: item["status"] for item in r.get_json()["data"]}


@pytest.fixture
def connect_plugins() -> list:
    """Override to register extra plugin objects (modules) for the test app."""
    return []


@pytest.fixture
def connect_config(tmp_path) -> dict[str, Any]:
    """Override to change settings; see :func:`make_config`."""
    return make_config(tmp_path)


@pytest.fixture
def connect_app(connect_config, connect_plugins):
    from .app import create_app

    app = create_app(connect_config, plugins=connect_plugins)
    with app.app_context():
        reset_database()
    yield app
    from .db import database

    if not database.is_closed():
        database.close()
    pool_close = getattr(database.obj, "close_all", None)
    if pool_close:
        pool_close()


@pytest.fixture
def connect(connect_app) -> ConnectHarness:
    """A :class:`ConnectHarness`: app, test client, an org and its Access Key."""
    from .api.access_keys import create_access_key
    from .db import database
    from .models import Organization

    with connect_app.app_context(), database.connection_context():
        org = Organization.create(name="Test org")
        _, plaintext = create_access_key(org, "tests")
    return ConnectHarness(app=connect_app, client=connect_app.test_client(), org_id=org.id, access_key=plaintext)

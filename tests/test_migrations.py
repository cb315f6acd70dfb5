"""Versioned migrations: a first-release database upgrades with its secrets intact, the steps build the
schema the models describe, a failed step rolls back, and concurrent runs apply each step once."""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from urllib.parse import urlsplit, urlunsplit

import peewee
import pytest

from connect_service import create_app
from connect_service.config import ConfigError, generate_key
from connect_service.db import database, open_database
from connect_service import migrations
from connect_service.models import ALL_MODELS, Connection, Credential
from connect_service.testing import make_config

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
#: the key tests/fixtures/make_release1_dumps.py encrypted the first-release dumps with
RELEASE1_ENCRYPTION_KEY = "9PZdKrG9C3LA3xg0PeBEgnFzl0mOOFGYS629Xw5w8hI"
BIN = os.path.join(os.path.dirname(sys.executable), "connect-service")
PG_URL = os.environ.get("CONNECT_TEST_DATABASE_URL", "")
KINDS = ["sqlite"] + (["postgresql"] if PG_URL.startswith("postgres") else [])


def _pg_admin() -> str:
    return urlunsplit(urlsplit(PG_URL)._replace(path="/postgres"))


@contextlib.contextmanager
def scratch_database(kind: str, tmp_path, dump: str | None = None):
    """A fresh database URL of ``kind`` (optionally loaded from an SQL dump), dropped afterwards."""
    if kind == "sqlite":
        path = tmp_path / f"scratch-{uuid.uuid4().hex[:8]}.db"
        if dump:
            con = sqlite3.connect(path)
            with open(dump) as fh:
                con.executescript(fh.read())
            con.close()
        yield f"sqlite:///{path}"
        return
    name = f"cs_scratch_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin()
    subprocess.run(["psql", admin, "-q", "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    url = urlunsplit(urlsplit(PG_URL)._replace(path=f"/{name}"))
    try:
        if dump:
            subprocess.run(["psql", url, "-q", "-v", "ON_ERROR_STOP=1", "-f", dump], check=True, capture_output=True)
        yield url
    finally:
        _close_pool()
        subprocess.run(["psql", admin, "-q", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
                       check=True, capture_output=True)


def _close_pool():
    if database.obj is not None:
        if not database.is_closed():
            database.close()
        getattr(database.obj, "close_all", lambda: None)()


@pytest.mark.parametrize("kind", KINDS)
def test_first_release_database_upgrades_with_every_secret_readable(kind, tmp_path):
    with open(os.path.join(FIXTURES, f"release1-{kind}.json")) as fh:
        manifest = json.load(fh)
    assert manifest["encryption_key"] == RELEASE1_ENCRYPTION_KEY
    with scratch_database(kind, tmp_path, os.path.join(FIXTURES, f"release1-{kind}.sql")) as url:
        app = create_app(make_config(tmp_path, database_url=url, encryption_keys=[RELEASE1_ENCRYPTION_KEY],
                                     secret_key=manifest["secret_key"]))
        with app.app_context():
            assert migrations.current_version() == 0
            with pytest.raises(ConfigError, match="run `connect-service migrate`"):
                migrations.check_schema()
            applied = migrations.migrate()
            assert [s.version for s in applied] == list(range(1, migrations.head() + 1))
            assert migrations.current_version() == migrations.head() and migrations.pending() == []
            migrations.check_schema()
            from connect_service.connections import read_settings
            from connect_service.oauth import client_secret
            from connect_service.rotation import check_keys_decrypt

            with database.connection_context():
                credential = Credential.get_by_id(manifest["credential_id"])
                assert client_secret(credential) == manifest["client_secret"]
                for expected in manifest["connections"]:
                    assert read_settings(Connection.get_by_id(expected["id"])) == expected["settings"]
            assert check_keys_decrypt()["failed_samples"] == 0

        client = app.test_client()
        auth = {"Authorization": f"Bearer {manifest['access_key']}"}
        r = client.get("/v1/connections", headers=auth)
        assert r.status_code == 200, r.get_json()
        assert {item["id"] for item in r.get_json()["data"]} == {c["id"] for c in manifest["connections"]}
        for expected in manifest["connections"]:
            r = client.get(f"/v1/connections/{expected['id']}", headers=auth)
            assert r.status_code == 200, r.get_json()
        r = client.get(f"/v1/apps/{manifest['app_id']}", headers=auth)
        assert r.status_code == 200 and r.get_json()["deployed_version"] == manifest["deployed_version"]
        r = client.get(f"/v1/credentials/{manifest['credential_id']}", headers=auth)
        assert r.status_code == 200 and manifest["client_secret"] not in r.get_data(as_text=True)
        # an end user of the first release still sees her requirement completed
        r = client.post("/v1/connect/tokens", json={"user_id": "alice"}, headers={"Host": "release1.example.com"})
        assert r.status_code == 201, r.get_json()
        token = r.get_json()["token"]
        r = client.get("/v1/connect/requirements/statuses", headers={"Authorization": f"Bearer {token}"})
        assert {i["id"]: i["status"] for i in r.get_json()["data"]} == {manifest["requirement_id"]: "completed"}
        _close_pool()


def _schema(db: peewee.Database) -> dict:
    """Tables, columns (type, NULL, primary key), indexes and foreign keys as the database reports them."""
    out = {}
    for table in db.get_tables():
        if table == migrations.SchemaVersion._meta.table_name:
            continue
        columns = {c.name: (c.data_type.lower(), c.null, c.primary_key) for c in db.get_columns(table)}
        indexes = sorted((i.name, tuple(i.columns), i.unique) for i in db.get_indexes(table))
        fks = sorted((f.column, f.dest_table, f.dest_column) for f in db.get_foreign_keys(table))
        out[table] = {"columns": columns, "indexes": indexes, "foreign_keys": fks}
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_migrations_build_the_schema_the_models_describe(kind, tmp_path):
    with scratch_database(kind, tmp_path) as by_steps, scratch_database(kind, tmp_path) as by_models:
        stepped = open_database(by_steps)
        database.initialize(stepped)
        assert [s.version for s in migrations.migrate()] == list(range(1, migrations.head() + 1))
        stepped_schema = _schema(stepped)
        stepped.close_all() if hasattr(stepped, "close_all") else stepped.close()

        modelled = open_database(by_models)
        database.initialize(modelled)
        with database.connection_context():
            database.create_tables(ALL_MODELS)
        modelled_schema = _schema(modelled)
        modelled.close_all() if hasattr(modelled, "close_all") else modelled.close()
        database.initialize(None)
    assert set(stepped_schema) == {m._meta.table_name for m in ALL_MODELS}
    for table in modelled_schema:  # table by table, so a failure names the table a step is missing for
        assert stepped_schema.get(table) == modelled_schema[table], table
    assert stepped_schema == modelled_schema


@pytest.mark.parametrize("kind", KINDS)
def test_no_index_is_a_left_prefix_of_another(kind, tmp_path):
    """An index whose columns lead another index of its table answers no lookup the longer one
    does not, and costs every INSERT (a secrets read writes an audit row on each request) one
    more B-tree to update. Unique indexes are kept: they state a rule, not a lookup."""
    with scratch_database(kind, tmp_path) as url:
        db = open_database(url)
        database.initialize(db)
        migrations.migrate()
        schema = _schema(db)
        db.close_all() if hasattr(db, "close_all") else db.close()
        database.initialize(None)
    redundant = []
    for table, facts in schema.items():
        for name, columns, unique in facts["indexes"]:
            longer = [other for other, wider, _ in facts["indexes"]
                      if other != name and len(wider) > len(columns) and wider[:len(columns)] == columns]
            if longer and not unique:
                redundant.append((table, name, longer))
    assert redundant == []


@pytest.mark.parametrize("kind", KINDS)
def test_a_failing_step_rolls_back_alone(kind, tmp_path, monkeypatch):
    real = migrations.steps()

    def boom(migrator, db):
        from playhouse.migrate import migrate

        migrate(migrator.add_column("organization", "half_done", peewee.CharField(null=True)))
        raise RuntimeError("step failed halfway")

    with scratch_database(kind, tmp_path) as url:
        database.initialize(open_database(url))
        migrations.migrate()
        broken = migrations.Step(len(real) + 1, "broken", "fails after adding a column", boom)
        monkeypatch.setattr(migrations, "steps", lambda: [*real, broken])
        with pytest.raises(RuntimeError, match="halfway"):
            migrations.migrate()
        assert migrations.current_version() == len(real)
        with database.connection_context():
            assert "half_done" not in {c.name for c in database.get_columns("organization")}
        assert [s.label for s in migrations.pending()] == [broken.label]
        _close_pool()
        database.initialize(None)


def _cli_env(tmp_path, url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECT_")}
    env.update(CONNECT_ENV="production", CONNECT_SECRET_KEY=uuid.uuid4().hex * 2, CONNECT_ENCRYPTION_KEYS=generate_key(),
               CONNECT_PUBLIC_URL="https://connect.test", CONNECT_INSTANCE_PATH=str(tmp_path), CONNECT_DATABASE_URL=url)
    return env


@pytest.mark.parametrize("kind", KINDS)
def test_migrate_command_check_and_alias(kind, tmp_path):
    with scratch_database(kind, tmp_path) as url:
        env = _cli_env(tmp_path, url)
        check = subprocess.run([BIN, "migrate", "--check"], env=env, capture_output=True, text=True, timeout=120)
        assert check.returncode == 1, check.stderr
        assert json.loads(check.stdout)["pending"] == [s.label for s in migrations.steps()]
        run = subprocess.run([BIN, "migrate"], env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert [line for line in run.stderr.splitlines() if line.startswith("migrate: applied")] == [
            f"migrate: applied {s.label}: {s.description}" for s in migrations.steps()]
        assert json.loads(run.stdout) == {"status": "ok", "version": migrations.head(),
                                          "applied": [s.label for s in migrations.steps()]}
        check = subprocess.run([BIN, "migrate", "--check"], env=env, capture_output=True, text=True, timeout=120)
        assert check.returncode == 0 and json.loads(check.stdout)["pending"] == []
        again = subprocess.run([BIN, "init-db"], env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and json.loads(again.stdout)["applied"] == []


@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_migrate_applies_each_step_once(kind, tmp_path):
    with scratch_database(kind, tmp_path) as url:
        env = _cli_env(tmp_path, url)
        procs = [subprocess.Popen([BIN, "migrate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        outputs = [p.communicate(timeout=180) for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outputs]
        applied = [label for out, _ in outputs for label in json.loads(out)["applied"]]
        assert sorted(applied) == [s.label for s in migrations.steps()]
        database.initialize(open_database(url))
        with database.connection_context():
            rows = [r.version for r in migrations.SchemaVersion.select().order_by(migrations.SchemaVersion.version)]
        assert rows == list(range(1, migrations.head() + 1))
        _close_pool()
        database.initialize(None)


def test_service_refuses_a_database_behind_its_code(tmp_path):
    """gunicorn with the shipped config, 2 workers: the master checks once and stops with one line."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    dump = os.path.join(FIXTURES, "release1-sqlite.sql")
    with scratch_database("sqlite", tmp_path, dump) as url:
        env = _cli_env(tmp_path, url)
        env.update(CONNECT_ENCRYPTION_KEYS=RELEASE1_ENCRYPTION_KEY, CONNECT_WORKERS="2", CONNECT_BIND="127.0.0.1:0")
        gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
        proc = subprocess.run([gunicorn, "-c", os.path.join(root, "deploy", "gunicorn.conf.py"), "wsgi:app"],
                              cwd=root, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        ours = [line for line in proc.stderr.splitlines() if line.startswith("connect-service:")]
        assert ours == [f"connect-service: the database schema is at version 0, this code needs {migrations.head()}: "
                        "run `connect-service migrate`"], proc.stderr
        # after migrate the same settings start (create_app runs the same check the master does)
        assert subprocess.run([BIN, "migrate"], env=env, capture_output=True, timeout=120).returncode == 0
        check = subprocess.run([sys.executable, "-c", "import wsgi"], cwd=root, env=env, capture_output=True,
                               text=True, timeout=120)
        assert check.returncode == 0, check.stderr

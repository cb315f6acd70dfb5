"""The connect-service command group, run as a real subprocess against a real database."""
import json
import os
import subprocess
import sys

import pytest

from connect_service.config import generate_key

BIN = os.path.join(os.path.dirname(sys.executable), "connect-service")


@pytest.fixture
def cli_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECT_")}
    env.update(CONNECT_ENV="production", CONNECT_SECRET_KEY="k" * 40, CONNECT_ENCRYPTION_KEYS=generate_key(),
               CONNECT_PUBLIC_URL="http://connect.test", CONNECT_INSTANCE_PATH=str(tmp_path),
               CONNECT_DATABASE_URL=os.environ.get("CONNECT_TEST_DATABASE_URL") or f"sqlite:///{tmp_path}/cli.db")
    if os.environ.get("CONNECT_TEST_DATABASE_URL"):
        from connect_service import create_app
        from connect_service.testing import make_config, reset_database

        app = create_app(make_config(tmp_path, database_url=env["CONNECT_DATABASE_URL"],
                                     encryption_keys=[env["CONNECT_ENCRYPTION_KEYS"]]))
        with app.app_context():
            reset_database()
    return env


def run(env, *args, ok=True):
    proc = subprocess.run([BIN, *args], env=env, capture_output=True, text=True, timeout=120)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def one_json(proc):
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


DEPLOY_TOML = """
[app]
name = "Helpdesk triage"
hostname = "Triage.Example.com"
visibility = "public"
return_urls = ["https://triage.example.com/done"]

[[requirements]]
key = "helpdesk"
type = "connection"
title = "Helpdesk API key"
description = "Read-only access to your helpdesk tickets."
spec = { type = "connection", data = { type = "dynamiq.connections.HttpApiKey" } }
"""


def test_bootstrap_and_deploy(cli_env, tmp_path):
    run(cli_env, "init-db")
    org = one_json(run(cli_env, "create-org", "Acme"))
    assert set(org) == {"id", "name"} and org["name"] == "Acme"
    key = one_json(run(cli_env, "create-access-key", "--org", org["id"], "--name", "ci"))
    assert key["key"].startswith("ak_") and key["id"] and key["name"] == "ci"
    path = tmp_path / "app.toml"
    path.write_text(DEPLOY_TOML)
    first = one_json(run(cli_env, "apps", "deploy", str(path), "--org", org["id"]))
    assert first["app"]["hostname"] == "triage.example.com"
    assert first["version"]["number"] == 1 and first["version"]["deployed_at"]
    second = one_json(run(cli_env, "apps", "deploy", str(path), "--org", org["id"]))
    assert second["app"]["id"] == first["app"]["id"] and second["version"]["number"] == 2
    assert second["version"]["requirements"][0]["id"] == first["version"]["requirements"][0]["id"]

    # the key works against the API of an app built from the same settings
    from connect_service import create_app

    cfg = {k.removeprefix("CONNECT_").lower(): v for k, v in cli_env.items() if k.startswith("CONNECT_")}
    cfg["encryption_keys"] = [cfg["encryption_keys"]]
    app = create_app(cfg)
    r = app.test_client().get("/v1/apps", headers={"Authorization": f"Bearer {key['key']}"})
    assert r.status_code == 200 and r.get_json()["data"][0]["id"] == first["app"]["id"]


def test_create_access_key_unknown_org(cli_env):
    run(cli_env, "init-db")
    proc = run(cli_env, "create-access-key", "--org", "org_missing", ok=False)
    assert proc.returncode != 0 and "org_missing" in proc.stderr


def test_deploy_rejects_bad_requirements(cli_env, tmp_path):
    run(cli_env, "init-db")
    org = one_json(run(cli_env, "create-org", "Acme"))
    path = tmp_path / "bad.toml"
    path.write_text(DEPLOY_TOML.replace("dynamiq.connections.HttpApiKey", "no.such.Type"))
    proc = run(cli_env, "apps", "deploy", str(path), "--org", org["id"], ok=False)
    assert proc.returncode != 0 and "requirements.0.spec.data.type" in proc.stderr


def test_plugins_lists_types(cli_env):
    proc = run(cli_env, "plugins")
    names = [json.loads(line)["name"] for line in proc.stdout.splitlines() if line.strip()]
    assert "dynamiq.connections.HttpApiKey" in names

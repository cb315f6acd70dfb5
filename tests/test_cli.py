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
               CONNECT_PUBLIC_URL="https://connect.test", CONNECT_INSTANCE_PATH=str(tmp_path),
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


def bare_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECT_")}
    env.update(extra)
    return env


@pytest.mark.parametrize("connect_env", ["production", "development"])
def test_help_and_plugins_need_no_configuration_and_create_nothing(connect_env, tmp_path):
    env = bare_env(CONNECT_ENV=connect_env)
    for args in (["--help"], ["migrate", "--help"], ["plugins"]):
        proc = subprocess.run([BIN, *args], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "generate-secret" in run(env, "--help").stdout
    names = [json.loads(line)["name"] for line in proc.stdout.splitlines() if line.strip()]
    assert "dynamiq.connections.HttpApiKey" in names
    assert os.listdir(tmp_path) == []  # no instance folder, no secrets file


PG = os.environ.get("CONNECT_TEST_DATABASE_URL", "")
PG_SERVER = PG.rsplit("/", 1)[0] if PG.startswith("postgres") else ""
FAILING_URLS = [
    ("postgresql://postgres@127.0.0.1:1/connect",
     'connect-service: CONNECT_DATABASE_URL: cannot use the database: connection to server at "127.0.0.1", '
     'port 1 failed: Connection refused'),
    ("postgresql://postgres@127.0.0.1:notaport/connect",
     "connect-service: CONNECT_DATABASE_URL: malformed URL (check the host and port)"),
    ("mysql://root@127.0.0.1/connect",
     "connect-service: CONNECT_DATABASE_URL: must start with sqlite:/// or postgresql://"),
    ("sqlite:////nonexistent-folder/connect.db",
     "connect-service: CONNECT_DATABASE_URL: cannot use the database: unable to open database file"),
]
if PG_SERVER:
    FAILING_URLS += [
        (f"{PG_SERVER}/cs_no_such_database", 'FATAL:  database "cs_no_such_database" does not exist'),
        (PG_SERVER.replace("postgres@", "cs_no_such_role:pw-not-shown@", 1) + "/postgres",
         'FATAL:  role "cs_no_such_role" does not exist'),
    ]


@pytest.mark.parametrize("url,line", FAILING_URLS)
@pytest.mark.parametrize("command", [["migrate"], ["init-db"], ["create-org", "Acme"], ["refresh-due"],
                                     ["rotate-keys"]])
def test_database_failures_are_one_line(url, line, command, cli_env):
    env = dict(cli_env, CONNECT_PUBLIC_URL="https://connect.test", CONNECT_DATABASE_URL=url)
    proc = run(env, *command, ok=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    ours = [entry for entry in proc.stderr.splitlines() if entry.startswith("connect-service:")]
    assert len(ours) == 1 and line in ours[0], proc.stderr
    assert "pw-not-shown" not in proc.stderr
    assert [entry for entry in proc.stderr.splitlines() if entry.strip() and entry not in ours] in (
        [], ["SQLite in production: use PostgreSQL for more than one host"]), proc.stderr


def failure(proc) -> str:
    """The one ``connect-service:`` line of a failed command (warnings logged before it are allowed)."""
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("connect-service:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_create_org_refuses_empty_and_duplicate_names(cli_env):
    run(cli_env, "init-db")
    for name in ("", "   "):
        proc = run(cli_env, "create-org", name, ok=False)
        assert failure(proc) == "connect-service: create-org: NAME must not be empty"
    first = one_json(run(cli_env, "create-org", "Acme"))
    proc = run(cli_env, "create-org", " Acme ", ok=False)
    assert failure(proc) == (
        f"connect-service: create-org: an organization named 'Acme' exists ({first['id']}); "
        "pass --allow-duplicate to create another")
    second = one_json(run(cli_env, "create-org", "Acme", "--allow-duplicate"))
    assert second["name"] == "Acme" and second["id"] != first["id"]


def file_lines(proc, path) -> list[str]:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    return [line for line in proc.stderr.splitlines() if line.startswith(f"{path}: ")]


def test_deploy_reports_file_errors_as_lines(cli_env, tmp_path):
    run(cli_env, "init-db")
    org = one_json(run(cli_env, "create-org", "Acme"))
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(DEPLOY_TOML.replace("Helpdesk triage", "Caf\u00e9").encode("latin-1"))
    proc = run(cli_env, "apps", "deploy", str(latin1), "--org", org["id"], ok=False)
    assert file_lines(proc, latin1) == [f"{latin1}: file: is not UTF-8 text (invalid byte at offset 18)"]
    bad = tmp_path / "bad.toml"
    bad.write_text(DEPLOY_TOML.replace('hostname = "Triage.Example.com"\n', "")
                   .replace("dynamiq.connections.HttpApiKey", "no.such.Type"))
    proc = run(cli_env, "apps", "deploy", str(bad), "--org", org["id"], ok=False)
    assert file_lines(proc, bad) == [f"{bad}: app.hostname: is required"]
    bad.write_text(DEPLOY_TOML.replace("dynamiq.connections.HttpApiKey", "no.such.Type"))
    proc = run(cli_env, "apps", "deploy", str(bad), "--org", org["id"], ok=False)
    lines = file_lines(proc, bad)
    assert len(lines) == 1 and lines[0].startswith(f"{bad}: requirements.0.spec.data.type: ")
    broken = tmp_path / "broken.toml"
    broken.write_text("[app\n")
    proc = run(cli_env, "apps", "deploy", str(broken), "--org", org["id"], ok=False)
    lines = file_lines(proc, broken)
    assert len(lines) == 1 and lines[0].startswith(f"{broken}: toml: ")


def test_serve_runs_gunicorn_with_the_shipped_config(cli_env, tmp_path):
    import http.client
    import socket
    import time

    run(cli_env, "init-db")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([BIN, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1"], env=cli_env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/healthz")
                status = conn.getresponse().status
                conn.close()
                break
            except OSError:
                time.sleep(0.1)
        assert status == 200
        assert "Booting worker" in (tmp_path / "serve.log").read_text()  # gunicorn, not Flask's dev server
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_demo_is_idempotent_and_keeps_its_key_private(tmp_path):
    env = bare_env(CONNECT_ENV="development", CONNECT_INSTANCE_PATH=str(tmp_path / "instance"))
    first = json.loads(run(env, "demo").stdout.splitlines()[0])
    second_proc = run(env, "demo")
    second = json.loads(second_proc.stdout.splitlines()[0])
    assert second == first  # same org, key, app, version: nothing new was created
    assert list(first["requirement_ids"]) == ["helpdesk"]  # no pipedream requirement in the demo
    assert f"Bearer {first['access_key']}" in second_proc.stderr
    key_file = tmp_path / "instance" / "demo-access-key"
    assert key_file.read_text().strip() == first["access_key"]
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"

    from connect_service import create_app

    app = create_app({"env": "development", "instance_path": str(tmp_path / "instance")})
    r = app.test_client().get("/v1/access-keys", headers={"Authorization": f"Bearer {first['access_key']}"})
    assert r.status_code == 200 and len(r.get_json()["data"]) == 1  # one demo key, however many runs


def run_in_terminal(env, *args):
    """Run the command with stdin/stdout/stderr on a pseudo-terminal; return (exit code, everything printed)."""
    import pty

    output = bytearray()

    def read(fd):
        data = os.read(fd, 4096)
        output.extend(data)
        return data

    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        status = pty.spawn([BIN, *args], read)
    finally:
        os.environ.clear()
        os.environ.update(old)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


@pytest.mark.parametrize("command,summary", [("rotate-keys", "rotate-keys: 0 re-encrypted"),
                                             ("refresh-due", '{"refreshed": 0, "failed": 0, "skipped": 0}')])
def test_batch_commands_show_a_progress_bar_on_a_terminal_and_lines_otherwise(command, summary, cli_env):
    run(cli_env, "init-db")
    code, printed = run_in_terminal(cli_env, command)
    assert code == 0, printed
    assert f"{command}  [" in printed and summary in printed  # click's bar: label, then the bar
    piped = run(cli_env, command)
    assert "[" not in piped.stderr and summary in piped.stdout + piped.stderr

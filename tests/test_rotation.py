"""Encryption-key rotation (``connect-service rotate-keys``) and the start-up key check."""
import datetime
import json
import os
import socket
import subprocess
import uuid
import sys

import pytest

from connect_service.app import create_app
from connect_service.config import ConfigError, generate_key
from connect_service.crypto import DecryptionError, Keyring
from connect_service.db import database
from connect_service.models import AuthorizationSession, Connection, Credential, utcnow
from connect_service.rotation import check_keys_decrypt, encrypted_columns, rotate_all
from connect_service.testing import make_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
HTTP_API_KEY = "dynamiq.connections.HttpApiKey"


def test_every_encrypted_column_is_covered():
    labels = {c.label for c in encrypted_columns()}
    assert {"connection.settings", "credential.oauth_client_secret", "credential.secret_state",
            "authorization_session.verifier"} <= labels
    # every *_encrypted field of every model, nothing else
    from connect_service.models import ALL_MODELS

    fields = {f"{m._meta.table_name}.{n}" for m in ALL_MODELS for n in m._meta.sorted_field_names
              if n.endswith("_encrypted")}
    assert {f"{c.table}.{c.field_name}" for c in encrypted_columns()} == fields


def seed(connect, app_row, users=("alice", "bob", "carol")):
    """Secrets in every encrypted column, written with the app's current primary key; returns plaintexts."""
    rid = connect.requirement_id(app_row, "helpdesk")
    expected = {}
    for user in users:
        r = connect.submit_credentials(connect.token(app_row, user), rid, HTTP_API_KEY,
                                       {"url": "https://helpdesk.example.com", "api_key": f"key-of-{user}"})
        assert r.status_code == 201, r.get_json()
    ring = connect.app.extensions["connect_keyring"]
    with connect.app.app_context(), database.connection_context():
        for conn in Connection.select().where(Connection.customer_id.in_(users)):
            expected[("connection", "settings", conn.id)] = json.dumps(
                {"url": "https://helpdesk.example.com", "api_key": f"key-of-{conn.customer_id}"},
                separators=(",", ":")).encode()
        for n in range(2):
            cred = Credential.create(org=connect.org_id, name=f"cred {n}", connector_name="oauth2",
                                     oauth_url="https://idp.example/authorize",
                                     oauth_token_url="https://idp.example/token", oauth_client_id=f"client-{n}")
            secret = json.dumps(f"client-secret-{n}").encode()
            state = json.dumps({"platform_token": f"platform-token-{n}"}).encode()
            Credential.update(
                oauth_client_secret_encrypted=ring.encrypt(secret, "credential", "oauth_client_secret", cred.id),
                secret_state_encrypted=ring.encrypt(state, "credential", "secret_state", cred.id),
            ).where(Credential.id == cred.id).execute()
            expected[("credential", "oauth_client_secret", cred.id)] = secret
            expected[("credential", "secret_state", cred.id)] = state
        conn = Connection.select().first()
        session = AuthorizationSession.create(
            state_hash=f"hash-{conn.id}", connection=conn.id, credential=cred.id,
            redirect_uri="http://connect.test/v1/connect/oauth2/callback", token_url="https://idp.example/token",
            expires_at=utcnow() + datetime.timedelta(minutes=10))
        verifier = json.dumps("pkce-verifier-" + "v" * 40).encode()
        AuthorizationSession.update(
            verifier_encrypted=ring.encrypt(verifier, "authorization_session", "verifier", session.id)
        ).where(AuthorizationSession.id == session.id).execute()
        expected[("authorization_session", "verifier", session.id)] = verifier
    return expected


def stored(app):
    """{(table, column, row id): ciphertext} of every stored encrypted value."""
    out = {}
    with app.app_context(), database.connection_context():
        for col in encrypted_columns():
            pk = col.model._meta.primary_key
            for row_id, value in col.model.select(pk, col.field).where(col.field.is_null(False)).tuples():
                out[(col.table, col.column, str(row_id))] = value
    return out


def assert_all_decrypt(app, expected, kid):
    ring = Keyring(app.config["CONNECT"]["encryption_keys"])
    values = stored(app)
    assert set(values) == set(expected)
    for where, ciphertext in values.items():
        assert ciphertext.split(":")[1] == kid, where
        assert ring.decrypt(ciphertext, *where) == expected[where]


def instance(connect, tmp_path, keys, **extra):
    cfg = make_config(tmp_path, encryption_keys=keys, database_url=connect.app.config["CONNECT"]["database_url"],
                      **extra)
    return create_app(cfg)


def production(connect, tmp_path, keys):
    """An app built as in production: the start-up key check runs."""
    return instance(connect, tmp_path, keys, env="production", public_url="https://connect.test")


@pytest.fixture
def old_key(connect):
    return connect.app.config["CONNECT"]["encryption_keys"][0]


def test_rotate_then_remove_old_key(connect, app_with_key, tmp_path, old_key):
    expected = seed(connect, app_with_key)
    new_key = generate_key()
    rotating = production(connect, tmp_path, [new_key, old_key])
    new_kid = Keyring([new_key]).primary_kid
    lines = []
    with rotating.app_context():
        summary = rotate_all(batch_size=2, echo=lines.append)
    assert summary["status"] == "ok" and summary["failed"] == 0
    assert summary["rotated"] == len(expected) == 3 + 2 + 2 + 1
    assert summary["columns"]["connection.settings"]["rotated"] == 3
    assert summary["primary_key_id"] == new_kid
    assert any("batch of 2" in line for line in lines)  # 3 connections in batches of 2
    assert_all_decrypt(rotating, expected, new_kid)
    # no secret in the progress output
    assert not any(b"key-of" in line.encode() or b"client-secret" in line.encode() for line in lines)

    # idempotent: a second run has nothing to do
    with rotating.app_context():
        again = rotate_all(batch_size=2, echo=lambda line: None)
    assert again["rotated"] == 0 and again["already_current"] == len(expected)

    # the old key can now be removed: start-up passes, and the API still reads the secrets
    final = production(connect, tmp_path, [new_key])
    with final.app_context(), database.connection_context():
        from connect_service.connections import read_settings

        for conn in Connection.select().where(Connection.requirement_id.is_null(False)):
            assert read_settings(conn)["api_key"] == f"key-of-{conn.customer_id}"
    final_client = final.test_client()
    rid = connect.requirement_id(app_with_key, "helpdesk")
    r = final_client.post("/v1/connect/tokens", json={"user_id": "alice"}, headers={"Host": app_with_key["hostname"]})
    token = r.get_json()["token"]
    r = final_client.post(f"/v1/connect/requirements/{rid}/credentials", headers={"Authorization": f"Bearer {token}"},
                          json={"type": HTTP_API_KEY, "config": {"url": "https://h.example", "api_key": "k2"}})
    assert r.status_code == 201
    # and the previous keyring (old key only) can no longer read what was rotated
    old_only = Keyring([old_key])
    for where, ciphertext in stored(final).items():
        with pytest.raises(DecryptionError):
            old_only.decrypt(ciphertext, *where)


def test_rotation_skips_values_already_under_the_primary_key(connect, app_with_key, tmp_path, old_key):
    expected = seed(connect, app_with_key)
    before = stored(connect.app)
    with connect.app.app_context():
        summary = rotate_all(echo=lambda line: None)
    assert summary["rotated"] == 0 and summary["already_current"] == len(expected)
    assert stored(connect.app) == before  # not even re-encrypted


def test_rotation_leaves_undecryptable_values_and_reports_them(connect, app_with_key, tmp_path, old_key):
    expected = seed(connect, app_with_key)
    with connect.app.app_context(), database.connection_context():
        victim = Connection.select().order_by(Connection.id).first()
        other = Connection.select().order_by(Connection.id.desc()).first()
        # a ciphertext moved from another row: authenticates nowhere but in its own row
        Connection.update(settings_encrypted=other.settings_encrypted).where(Connection.id == victim.id).execute()
    new_key = generate_key()
    app = instance(connect, tmp_path, [new_key, old_key])
    lines = []
    with app.app_context():
        summary = rotate_all(batch_size=1, echo=lines.append)
    assert summary["status"] == "incomplete"
    assert summary["failed"] == 1 and summary["rotated"] == len(expected) - 1
    assert any(victim.id in line and "authentication failed" in line for line in lines)
    assert stored(app)[("connection", "settings", victim.id)].split(":")[1] == Keyring([old_key]).primary_kid
    # running again terminates and reports the same row
    with app.app_context():
        again = rotate_all(batch_size=1, echo=lambda line: None)
    assert again["failed"] == 1 and again["rotated"] == 0


def test_rotation_does_not_overwrite_a_concurrent_write(connect, app_with_key, tmp_path, old_key):
    seed(connect, app_with_key, users=("alice",))
    new_key = generate_key()
    app = instance(connect, tmp_path, [new_key, old_key])
    ring = app.extensions["connect_keyring"]
    real_decrypt = ring.decrypt
    written = {}

    def decrypt_while_the_service_writes(token, table, column, row_id):
        plaintext = real_decrypt(token, table, column, row_id)
        if table == "connection" and not written:  # the service saves new settings meanwhile
            written["value"] = ring.encrypt_json({"api_key": "newer"}, "connection", "settings", row_id)
            Connection.update(settings_encrypted=written["value"]).where(Connection.id == row_id).execute()
        return plaintext

    ring.decrypt = decrypt_while_the_service_writes
    with app.app_context():
        summary = rotate_all(echo=lambda line: None)
    assert summary["changed_concurrently"] == 1
    values = stored(app)
    conn_values = [v for (t, _, _), v in values.items() if t == "connection"]
    assert conn_values == [written["value"]]


def test_start_up_fails_with_keys_that_cannot_decrypt(connect, app_with_key, tmp_path, old_key):
    seed(connect, app_with_key)
    with pytest.raises(ConfigError) as info:
        production(connect, tmp_path, [generate_key()])
    message = str(info.value)
    assert message.startswith("CONNECT_ENCRYPTION_KEYS:") and "\n" not in message
    assert old_key not in message
    # removing the old key before rotating is caught the same way
    new_key = generate_key()
    production(connect, tmp_path, [new_key, old_key])  # fine while both are there
    with pytest.raises(ConfigError, match="CONNECT_ENCRYPTION_KEYS"):
        production(connect, tmp_path, [new_key])


def test_workers_of_a_checked_master_skip_the_scan_only_with_the_same_database_and_keys(
        connect, app_with_key, tmp_path, old_key, monkeypatch):
    """deploy/gunicorn.conf.py's master checks the keys once and marks its environment (app.mark_keys_checked);
    a worker it forks with the same database and keyring skips rotation.check_keys_decrypt (a read of every
    encrypted row at each boot), one with other keys checks for itself, so a wrong key still stops it."""
    from connect_service import app as app_module

    seed(connect, app_with_key)
    monkeypatch.setenv(app_module.KEYS_CHECKED_ENV, "")  # restored (removed) after the test
    scans = []
    real = app_module.check_keys_decrypt
    monkeypatch.setattr(app_module, "check_keys_decrypt", lambda ring: scans.append(ring.key_ids) or real(ring))
    master = production(connect, tmp_path, [old_key])
    assert len(scans) == 1
    app_module.mark_keys_checked(master)
    marker = os.environ[app_module.KEYS_CHECKED_ENV]
    assert marker == app_module.keys_checked_marker(master) and old_key not in marker
    production(connect, tmp_path, [old_key])  # a worker: the same database and keys
    assert len(scans) == 1
    new_key = generate_key()
    production(connect, tmp_path, [new_key, old_key])  # other keys (a reload): checks for itself, and passes
    assert len(scans) == 2
    with pytest.raises(ConfigError, match="CONNECT_ENCRYPTION_KEYS"):
        production(connect, tmp_path, [generate_key()])  # a key that cannot decrypt is still refused
    assert len(scans) == 3
    other = f"sqlite:///{tmp_path}/other.db"
    cfg = make_config(tmp_path, encryption_keys=[old_key], database_url=other, env="production",
                      public_url="https://connect.test")
    create_app(cfg, require_schema=False)  # the same keys on another database: checked again
    assert len(scans) == 4


def test_start_up_check_tolerates_tampered_rows_but_not_a_wrong_key(connect, app_with_key, tmp_path, old_key):
    seed(connect, app_with_key)
    with connect.app.app_context(), database.connection_context():
        rows = list(Connection.select().order_by(Connection.id))
        Connection.update(settings_encrypted=rows[1].settings_encrypted).where(Connection.id == rows[0].id).execute()
    app = production(connect, tmp_path, [old_key])  # one bad row among good ones: logged, not fatal
    with app.app_context():
        result = check_keys_decrypt()
    assert result["failed_samples"] == 1
    assert result["checked"]["connection.settings"] == {Keyring([old_key]).primary_kid: 3}


def test_start_up_on_a_fresh_database_without_tables(tmp_path):
    cfg = make_config(tmp_path, env="production", public_url="https://connect.test",
                      database_url=f"sqlite:///{tmp_path}/fresh.db")
    with pytest.raises(ConfigError, match="run `connect-service migrate`"):
        create_app(cfg)  # the service refuses a database behind its code
    app = create_app(cfg, require_schema=False)  # as `migrate` builds it: no tables yet, nothing to check
    with app.app_context():
        assert check_keys_decrypt()["checked"] == {}


def test_start_up_with_database_down_stops_with_one_line(tmp_path):
    cfg = make_config(tmp_path, env="production", public_url="https://connect.test",
                      database_url="postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(ConfigError, match="^CONNECT_DATABASE_URL: cannot use the database: "):
        create_app(cfg)  # one line (gunicorn's master prints it); a running service answers 503 instead


# --- the CLI and gunicorn ----------------------------------------------------------------------

def cli_env(connect, keys, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECT_")}
    env.update({
        "CONNECT_ENV": "production", "CONNECT_PUBLIC_URL": "https://connect.test",
        "CONNECT_SECRET_KEY": connect.app.config["CONNECT"]["secret_key"],
        "CONNECT_ENCRYPTION_KEYS": ",".join(keys),
        "CONNECT_DATABASE_URL": connect.app.config["CONNECT"]["database_url"],
        "CONNECT_INSTANCE_PATH": connect.app.config["CONNECT"]["instance_path"],
    })
    env.update(extra)
    return env


def run_cli(env, *args):
    return subprocess.run([os.path.join(BIN, "connect-service"), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_rotate_keys(connect, app_with_key, tmp_path, old_key):
    expected = seed(connect, app_with_key)
    new_key = generate_key()
    done = run_cli(cli_env(connect, [new_key, old_key]), "rotate-keys", "--batch-size", "3")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["rotated"] == len(expected) and summary["failed"] == 0
    for secret in (b"key-of-alice", b"client-secret-0", b"platform-token-0", b"pkce-verifier"):
        assert secret.decode() not in done.stdout + done.stderr
    again = run_cli(cli_env(connect, [new_key, old_key]), "rotate-keys")
    assert json.loads(again.stdout)["rotated"] == 0
    # old key removed: the CLI starts and everything decrypts
    final = run_cli(cli_env(connect, [new_key]), "rotate-keys")
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["already_current"] == len(expected)


def test_cli_exits_non_zero_with_one_line_naming_the_setting(connect, app_with_key, tmp_path):
    seed(connect, app_with_key)
    done = run_cli(cli_env(connect, [generate_key()]), "refresh-due")  # plugins needs no keys any more
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if "CONNECT_ENCRYPTION_KEYS" in line]
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == lines[0]
    assert done.stdout == ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gunicorn_exits_non_zero_with_keys_that_cannot_decrypt(connect, app_with_key, tmp_path):
    seed(connect, app_with_key)
    env = cli_env(connect, [generate_key()])
    proc = subprocess.Popen([os.path.join(BIN, "gunicorn"), "-w", "1", "-b", f"127.0.0.1:{free_port()}", "wsgi:app"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    ours = [line for line in stderr.splitlines() if line.startswith("connect-service:")]
    assert len(ours) == 1 and ours[0].startswith("connect-service: CONNECT_ENCRYPTION_KEYS: cannot decrypt existing data")
    assert "Traceback" not in stderr


# --- with the data the service's own OAuth code writes ---------------------------------------------

@pytest.fixture(scope="module")
def oauth_server():
    from tests.support.oauth_server import OAuthTestServer

    with OAuthTestServer() as srv:
        srv.auto_approve = True
        yield srv


def test_rotation_covers_what_the_oauth_code_writes(connect, tmp_path, old_key, oauth_server):
    import requests

    client_id = f"client-{uuid.uuid4().hex[:8]}"
    r = connect.client.post("/v1/credentials", headers=connect.auth, json={
        "name": "custom", "mode": "OAUTH", "connector_name": "oauth2", "oauth_url": oauth_server.authorize_url,
        "oauth_token_url": oauth_server.token_url, "oauth_client_id": client_id,
        "oauth_client_secret": "rotating-client-secret", "oauth_grant_type": "authorization_code"})
    assert r.status_code == 201, r.get_json()
    callback = r.get_json()["redirect_uri"]
    oauth_server.add_client(client_id, "rotating-client-secret", [callback])
    app_row = connect.create_app_with_requirements([{"key": "account", "type": "connection", "title": "Account",
                                                     "spec": {"type": "connection",
                                                              "data": {"type": "dynamiq.connections.OAuth2"}}}])
    rid = connect.requirement_id(app_row, "account")
    token = connect.token(app_row, "alice")
    r = connect.client.post(f"/v1/connect/requirements/{rid}/oauth2/authorize",
                            headers={"Authorization": f"Bearer {token}"})
    conn_id = r.get_json()["connection_id"]
    location = requests.get(r.get_json()["authorization_url"], allow_redirects=False, timeout=10).headers["Location"]
    assert connect.client.get(location).status_code == 200
    # a second flow left pending: its PKCE verifier stays in the database
    other = connect.token(app_row, "bob")
    assert connect.client.post(f"/v1/connect/requirements/{rid}/oauth2/authorize",
                               headers={"Authorization": f"Bearer {other}"}).status_code == 201
    labels = {where[:2] for where in stored(connect.app)}
    assert {("connection", "settings"), ("credential", "oauth_client_secret"),
            ("authorization_session", "verifier")} <= labels

    new_key = generate_key()
    with instance(connect, tmp_path, [new_key, old_key]).app_context():
        summary = rotate_all(echo=lambda line: None)
    assert summary["failed"] == 0 and summary["rotated"] == len(stored(connect.app))
    final = production(connect, tmp_path, [new_key])  # the old key is gone
    client = final.test_client()
    # a forced refresh decrypts the client secret and the tokens with the new key and re-encrypts the result
    r = client.get(f"/v1/connections/{conn_id}", headers=connect.auth,
                   query_string={"include_secrets": "true", "refresh": "force"})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["settings"]["oauth"]["credentials"]["access_token"]
    assert oauth_server.token_calls("refresh_token") >= 1


def test_cli_rotate_keys_exits_1_when_something_cannot_be_decrypted(connect, app_with_key, old_key):
    seed(connect, app_with_key, users=("alice", "bob"))
    with connect.app.app_context(), database.connection_context():
        rows = list(Connection.select().order_by(Connection.id))
        Connection.update(settings_encrypted=rows[1].settings_encrypted).where(Connection.id == rows[0].id).execute()
    done = run_cli(cli_env(connect, [generate_key(), old_key]), "rotate-keys")
    assert done.returncode == 1
    summary = json.loads(done.stdout)
    assert summary["status"] == "incomplete" and summary["failed"] == 1
    assert rows[0].id in done.stderr and "key-of" not in done.stderr

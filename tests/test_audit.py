"""The audit log (issue 16 §2): who read a secret or changed something, written in the transaction of
the change, listed newest first per org with filters, never holding a secret; and ``connect-service prune``."""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys

import pytest

from conftest import HTTP_API_KEY
from connect_service import access_keys
from connect_service.db import database
from connect_service.models import (AccessKey, AuditEvent, AuthorizationSession, Organization, RateLimitHit,
                                    utcnow)
from test_refresh import (create_oauth_connection, connect_plugins, credential, issue_tokens,  # noqa: F401
                          oauth_server, past)

BIN = os.path.join(os.path.dirname(sys.executable), "connect-service")
API_KEY = "sk-audit-secret-value-77"
EVENT_KEYS = {"id", "at", "actor", "action", "target", "app_id", "ip", "request_id", "details"}


def events(connect, headers=None, **query):
    r = connect.client.get("/v1/audit-events", query_string=query, headers=headers or connect.auth)
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def actions(connect, **query):
    return [e["action"] for e in events(connect, **query)["data"]]


def import_api_key_connection(connect, credential_id):
    r = connect.client.post("/v1/connections", headers=connect.auth, json={
        "connector_config_id": credential_id, "customer_id": "c-1",
        "data": {"connector_name": HTTP_API_KEY, "settings": {"url": "https://h.example.com", "api_key": API_KEY}}})
    assert r.status_code == 200, r.get_json()
    return r.get_json()["id"]


def own_key_id(connect):
    with connect.app.app_context(), database.connection_context():
        return AccessKey.get(AccessKey.org == connect.org_id).id


def test_a_secrets_read_is_recorded_with_actor_ip_and_request_id(connect, credential):
    conn_id = import_api_key_connection(connect, credential.id)
    r = connect.client.get(f"/v1/connections/{conn_id}?include_secrets=true", headers={
        **connect.auth, "X-Request-Id": "req-audit-1", "X-Forwarded-For": "203.0.113.9"})
    assert r.status_code == 200 and r.get_json()["settings"]["api_key"] == API_KEY
    connect.client.get(f"/v1/connections/{conn_id}", headers=connect.auth)  # no secrets: not a secrets read
    body = events(connect, action="connection.secrets_read")
    [event] = body["data"]
    assert set(event) == EVENT_KEYS
    assert event["actor"] == {"type": "access_key", "id": own_key_id(connect)}
    assert event["target"] == {"type": "connection", "id": conn_id}
    assert event["ip"] == "203.0.113.9" and event["request_id"] == "req-audit-1"
    assert event["at"].endswith("Z")
    assert API_KEY not in json.dumps(events(connect))


def test_a_failed_read_writes_nothing(connect, credential):
    conn_id = import_api_key_connection(connect, credential.id)
    r = connect.client.get(f"/v1/connections/{conn_id}?include_secrets=true&refresh=force", headers=connect.auth)
    assert r.status_code == 409  # an API-key connection cannot be refreshed: the read fails
    assert actions(connect, action="connection.secrets_read") == []


def test_changes_are_recorded(connect, credential, app_with_key, oauth_server):
    conn_id = import_api_key_connection(connect, credential.id)
    connect.client.patch(f"/v1/connections/{conn_id}", json={"display_name": "x"}, headers=connect.auth)
    connect.client.delete(f"/v1/connections/{conn_id}", headers=connect.auth)
    # an OAuth connection whose tokens the provider revokes on delete
    token = issue_tokens(oauth_server)
    oauth_id = create_oauth_connection(connect.app, connect.org_id, credential, token, expires_at=None)
    assert connect.client.delete(f"/v1/connections/{oauth_id}", headers=connect.auth).status_code == 204
    key = connect.client.post("/v1/access-keys", json={"name": "ci"}, headers=connect.auth).get_json()
    connect.client.delete(f"/v1/access-keys/{key['id']}", headers=connect.auth)
    cred = connect.client.post("/v1/credentials", headers=connect.auth, json={
        "name": "partner", "mode": "OAUTH", "connector_name": "oauth2",
        "oauth_url": "https://idp.example.com/authorize", "oauth_token_url": "https://idp.example.com/token",
        "oauth_client_id": "cid", "oauth_client_secret": "csecret-never-logged", "oauth_scope": "read",
        "oauth_grant_type": "authorization_code"}).get_json()
    connect.client.patch(f"/v1/credentials/{cred['id']}", json={"name": "partner 2"}, headers=connect.auth)
    connect.client.delete(f"/v1/credentials/{cred['id']}", headers=connect.auth)
    endpoint = connect.client.post("/v1/webhook-endpoints", json={"url": "https://example.com/h"},
                                   headers=connect.auth).get_json()
    connect.client.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", headers=connect.auth)
    connect.client.delete(f"/v1/webhook-endpoints/{endpoint['id']}", headers=connect.auth)
    token = connect.token(app_with_key, "end-user-9")
    connect.submit_credentials(token, connect.requirement_id(app_with_key, "helpdesk"), HTTP_API_KEY,
                               {"url": "https://h.example.com", "api_key": API_KEY})

    listed = events(connect, limit=200)["data"]
    assert [e["action"] for e in listed] == [
        "connection.created",
        "webhook_endpoint.deleted", "webhook_endpoint.secret_rotated", "webhook_endpoint.created",
        "credential.deleted", "credential.updated", "credential.created",
        "access_key.revoked", "access_key.created",
        "token.revoked", "connection.deleted",
        "connection.deleted", "connection.updated", "connection.created",
        "access_key.created",  # the harness's own key
    ]  # newest first
    by_end_user = listed[0]
    assert by_end_user["actor"] == {"type": "connect_token", "id": "end-user-9"}
    assert by_end_user["app_id"] == app_with_key["id"]
    assert listed[7]["target"] == {"type": "access_key", "id": key["id"]}
    text = json.dumps(listed)
    for secret in (API_KEY, "csecret-never-logged", endpoint["secret"], key["key"], token):
        assert secret not in text


def test_filters_pagination_and_org_scope(connect, credential):
    first = import_api_key_connection(connect, credential.id)
    second = import_api_key_connection(connect, credential.id)
    for conn_id in (first, second, first):
        connect.client.get(f"/v1/connections/{conn_id}?include_secrets=true", headers=connect.auth)
    assert len(actions(connect, target_id=first)) == 3
    assert actions(connect, actor_id=own_key_id(connect), action="connection.created") == ["connection.created"] * 2
    seen, cursor = [], None
    while True:
        page = events(connect, limit=2, **({"cursor": cursor} if cursor else {}))
        seen += page["data"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len({e["id"] for e in seen}) == 6  # with the harness's own access_key.created
    assert [e["at"] for e in seen] == sorted((e["at"] for e in seen), reverse=True)
    everything = events(connect, limit=200)["data"]
    assert [e["id"] for e in seen] == [e["id"] for e in everything]
    future = (utcnow() + datetime.timedelta(hours=1)).isoformat()
    assert actions(connect, since=future) == []
    assert len(actions(connect, until=future)) == 6
    for bad in ({"action": "nope"}, {"since": "yesterday"}, {"limit": "0"}):
        r = connect.client.get("/v1/audit-events", query_string=bad, headers=connect.auth)
        assert r.status_code == 400 and set(bad) <= set(r.get_json()["error"]["details"])
    with connect.app.app_context(), database.connection_context():
        _, other_key = access_keys.create_access_key(Organization.create(name="Other"), "o")
    other = events(connect, headers={"Authorization": f"Bearer {other_key}"})["data"]
    assert [e["action"] for e in other] == ["access_key.created"]  # its own key, nothing of ours
    assert connect.client.get("/v1/audit-events").status_code == 401


def test_a_change_that_rolls_back_records_nothing(connect):
    with connect.app.test_request_context(), database.connection_context():
        org = Organization.get_by_id(connect.org_id)
        before = AuditEvent.select().count()
        with pytest.raises(RuntimeError), database.atomic():
            access_keys.create_access_key(org, "doomed")
            raise RuntimeError("the surrounding transaction fails")
        assert AuditEvent.select().count() == before
        assert not AccessKey.select().where(AccessKey.name == "doomed").exists()


def _cli_env(connect, tmp_path, **extra):
    cfg = connect.app.config["CONNECT"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECT_")}
    env.update(CONNECT_ENV="testing", CONNECT_SECRET_KEY=cfg["secret_key"],
               CONNECT_ENCRYPTION_KEYS=",".join(cfg["encryption_keys"]), CONNECT_PUBLIC_URL=cfg["public_url"],
               CONNECT_INSTANCE_PATH=str(tmp_path), CONNECT_DATABASE_URL=cfg["database_url"], **extra)
    return env


def test_prune_keeps_recent_events_and_removes_old_sessions_and_rate_limit_rows(
        connect, credential, tmp_path):
    conn_id = import_api_key_connection(connect, credential.id)
    with connect.app.app_context(), database.connection_context():
        now = utcnow()
        old = AuditEvent.create(org=connect.org_id, at=now - datetime.timedelta(days=31), actor_type="system",
                                action="connection.secrets_read", target_type="connection", target_id=conn_id)
        recent = AuditEvent.create(org=connect.org_id, at=now - datetime.timedelta(days=29), actor_type="system",
                                   action="connection.secrets_read", target_type="connection", target_id=conn_id)
        for expires, state in ((now - datetime.timedelta(days=2), "old"), (now + datetime.timedelta(minutes=5), "live")):
            AuthorizationSession.create(state_hash=f"h-{state}", connection=conn_id, credential=credential.id,
                                        redirect_uri="https://connect.test/cb", token_url="https://t", expires_at=expires)
        RateLimitHit.create(bucket="b", window=1, count=3)
    proc = subprocess.run([BIN, "prune"], env=_cli_env(connect, tmp_path, CONNECT_AUDIT_RETENTION_DAYS="30"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"audit_events": 1, "authorization_sessions": 1, "rate_limit_rows": 1}
    assert "prune: 1 audit events (older than 30 days)" in proc.stderr
    with connect.app.app_context(), database.connection_context():
        assert AuditEvent.get_or_none(AuditEvent.id == old.id) is None
        assert AuditEvent.get_or_none(AuditEvent.id == recent.id) is not None
        assert [s.state_hash for s in AuthorizationSession.select()] == ["h-live"]
        assert RateLimitHit.select().count() == 0


def test_a_key_rotation_run_is_recorded_for_every_org(connect, credential, tmp_path):
    import_api_key_connection(connect, credential.id)
    proc = subprocess.run([BIN, "rotate-keys"], env=_cli_env(connect, tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    [event] = events(connect, action="keys.rotated")["data"]
    assert event["actor"] == {"type": "system", "id": None} and event["target"]["type"] == "encryption_key"
    assert set(event["details"]) == {"rotated", "already_current", "failed"}

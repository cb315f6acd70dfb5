"""Webhooks (issue 16 §1): endpoints, the outbox written with each change, Standard Webhooks signatures
verified by the ``standardwebhooks`` package in a local receiver, retries, claims, and nothing lost."""
from __future__ import annotations

import base64
import datetime
import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from conftest import API_KEY_ONLY, HTTP_API_KEY
from connect_service import requirements, webhook_delivery
from connect_service.db import database
from connect_service.models import App, Connection, Organization, WebhookDelivery, WebhookEndpoint, WebhookEvent, utcnow
from connect_service.access_keys import create_access_key
from test_oauth_flow import OAUTH2, authorize, browser_to_callback, make_credential, requirement, server  # noqa: F401
from tests.support.webhook_receiver import WebhookReceiver

BIN = os.path.join(os.path.dirname(sys.executable), "connect-service")
SECRET_VALUE = "sk-live-do-not-leak-42"


@pytest.fixture
def receiver():
    rec = WebhookReceiver().start()
    yield rec
    rec.release()
    rec.stop()


def make_endpoint(connect, receiver, **extra):
    r = connect.client.post("/v1/webhook-endpoints", json={"url": receiver.url, **extra}, headers=connect.auth)
    assert r.status_code == 201, r.get_json()
    receiver.secrets.append(r.get_json()["secret"])
    return r.get_json()


def submit(connect, app, user):
    token = connect.token(app, user)
    r = connect.submit_credentials(token, connect.requirement_id(app, "helpdesk"), HTTP_API_KEY,
                                   {"url": "https://h.example.com/api", "api_key": SECRET_VALUE})
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def deliver(connect, **kwargs):
    with connect.app.app_context(), database.connection_context():
        return webhook_delivery.run(once=True, echo=lambda line: None, **kwargs)


def deliveries(connect, **query):
    r = connect.client.get("/v1/webhook-deliveries", query_string=query, headers=connect.auth)
    assert r.status_code == 200, r.get_json()
    return r.get_json()["data"]


def advance_clock(connect):
    """Time passes: every retry waiting for its backoff (and every lease) is due now."""
    with connect.app.app_context(), database.connection_context():
        past = utcnow() - datetime.timedelta(seconds=1)
        WebhookDelivery.update(next_attempt_at=past).where(WebhookDelivery.status == "pending").execute()
        WebhookDelivery.update(lease_until=past).where(WebhookDelivery.lease_until.is_null(False)).execute()


# --- endpoints ----------------------------------------------------------------------------------

def test_create_shows_the_secret_once_and_validates(connect, receiver, app_with_key):
    body = make_endpoint(connect, receiver, events=["connection.created"], description="crm sync")
    assert set(body) >= {"id", "url", "events", "app_id", "secret", "created_at"}
    assert body["secret"].startswith("whsec_") and len(base64.b64decode(body["secret"][6:])) == 32
    assert body["events"] == ["connection.created"] and body["app_id"] is None and body["disabled"] is False
    got = connect.client.get(f"/v1/webhook-endpoints/{body['id']}", headers=connect.auth).get_json()
    assert "secret" not in got and got["url"] == receiver.url
    listed = connect.client.get("/v1/webhook-endpoints", headers=connect.auth).get_json()["data"]
    assert [e["id"] for e in listed] == [body["id"]] and "secret" not in listed[0]
    default = make_endpoint(connect, receiver)
    assert "requirement.completed" in default["events"] and "connection.deleted" in default["events"]

    for bad, field in [({"url": "http://example.com/hook"}, "url"), ({"url": "ftp://x/y"}, "url"),
                       ({"url": "https://x.example/h", "events": ["nope"]}, "events.0"),
                       ({"url": "https://x.example/h", "app_id": "not-mine"}, "app_id"), ({"description": "x"}, "url")]:
        r = connect.client.post("/v1/webhook-endpoints", json=bad, headers=connect.auth)
        assert r.status_code == 400 and field in r.get_json()["error"]["details"], (bad, r.get_json())

    assert connect.client.delete(f"/v1/webhook-endpoints/{body['id']}", headers=connect.auth).status_code == 204
    assert connect.client.get(f"/v1/webhook-endpoints/{body['id']}", headers=connect.auth).status_code == 404
    assert connect.client.get("/v1/webhook-endpoints", headers={}).status_code == 401


def test_another_orgs_endpoint_does_not_exist(connect, receiver):
    body = make_endpoint(connect, receiver)
    with connect.app.app_context(), database.connection_context():
        _, key = create_access_key(Organization.create(name="Other"), "o")
    other = {"Authorization": f"Bearer {key}"}
    for method, path in [("get", ""), ("delete", ""), ("post", "/rotate-secret")]:
        r = getattr(connect.client, method)(f"/v1/webhook-endpoints/{body['id']}{path}", headers=other)
        assert r.status_code == 404
    assert connect.client.get("/v1/webhook-endpoints", headers=other).get_json()["data"] == []


# --- events and delivery ------------------------------------------------------------------------

def test_connection_events_are_delivered_signed_and_without_secrets(connect, receiver, app_with_key):
    make_endpoint(connect, receiver)
    submit(connect, app_with_key, "user-1")
    conn = connect.connection(app_with_key, "user-1", "helpdesk")
    submit(connect, app_with_key, "user-1")  # re-submitted: updated, and the requirement completes only once
    connect.client.delete(f"/v1/connections/{conn['id']}", headers=connect.auth)
    totals = deliver(connect)
    assert totals["delivered"] == 4 and receiver.errors == []
    types = [p["type"] for p in receiver.payloads()]
    assert sorted(types) == sorted(["connection.created", "requirement.completed", "connection.updated",
                                    "connection.deleted"])
    created = receiver.payloads("connection.created")[0]
    assert set(created) == {"type", "timestamp", "data"}
    assert created["data"] == {"id": conn["id"], "app_id": app_with_key["id"], "customer_id": "user-1",
                               "requirement_id": connect.requirement_id(app_with_key, "helpdesk"),
                               "connector_name": conn["connector_name"], "status": "active",
                               "display_name": None, "error": None}
    completed = receiver.payloads("requirement.completed")[0]["data"]
    assert completed["customer_id"] == "user-1" and completed["connection_id"] == conn["id"]
    for request in receiver.requests:
        assert SECRET_VALUE not in request["raw"] and SECRET_VALUE not in json.dumps(request["headers"])
        assert request["headers"]["webhook-id"].startswith("msg_")
        assert request["headers"]["webhook-signature"].startswith("v1,")
    assert {d["status"] for d in deliveries(connect)} == {"delivered"}


def test_endpoint_filters_by_app_and_event_type(connect, receiver, app_with_key):
    other_app = connect.create_app_with_requirements(API_KEY_ONLY)
    only_app = make_endpoint(connect, receiver, app_id=app_with_key["id"])
    only_deleted = make_endpoint(connect, receiver, events=["connection.deleted"])
    submit(connect, app_with_key, "u1")
    submit(connect, other_app, "u2")
    by_endpoint = {ep["id"]: [d["event_type"] for d in deliveries(connect, endpoint_id=ep["id"])]
                   for ep in (only_app, only_deleted)}
    assert sorted(by_endpoint[only_app["id"]]) == ["connection.created", "requirement.completed"]
    assert by_endpoint[only_deleted["id"]] == []


def test_receiver_down_then_back_delivers_everything_once(connect, receiver, app_with_key):
    endpoint = make_endpoint(connect, receiver)
    receiver.stop()
    for user in ("a", "b", "c"):
        submit(connect, app_with_key, user)
    totals = deliver(connect)
    assert totals == {"delivered": 0, "pending": 6, "failed": 0}
    waiting = deliveries(connect, status="pending")
    assert len(waiting) == 6
    for item in waiting:
        assert item["attempts"] == 1 and item["last_status_code"] is None and item["last_error"]
        due = datetime.datetime.fromisoformat(item["next_attempt_at"].rstrip("Z"))
        assert due > utcnow() - datetime.timedelta(seconds=1)  # backoff: not due at once
    assert deliver(connect)["delivered"] == 0  # nothing is due before the backoff ends
    failing = connect.client.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=connect.auth).get_json()
    assert failing["failing_since"] is not None and failing["disabled"] is False

    receiver.start()  # same port
    advance_clock(connect)
    assert deliver(connect)["delivered"] == 6
    assert sorted(receiver.accepted) == sorted({d["event_id"] for d in deliveries(connect)})
    assert len(receiver.accepted) == len(set(receiver.accepted)) == 6
    assert {d["attempts"] for d in deliveries(connect)} == {2}
    healthy = connect.client.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=connect.auth).get_json()
    assert healthy["failing_since"] is None


def test_retries_back_off_then_fail_and_retry_requeues(connect, receiver, app_with_key):
    make_endpoint(connect, receiver, events=["connection.created"])
    receiver.answer = 500
    submit(connect, app_with_key, "u")
    delays = []
    for attempt in range(1, 8):
        deliver(connect)
        [item] = deliveries(connect)
        assert item["attempts"] == attempt and item["last_status_code"] == 500
        if attempt < 7:
            assert item["status"] == "pending"
            due = datetime.datetime.fromisoformat(item["next_attempt_at"].rstrip("Z"))
            delays.append((due - utcnow()).total_seconds())
            advance_clock(connect)
    assert item["status"] == "failed" and item["next_attempt_at"] is None
    for delay, nominal in zip(delays, webhook_delivery.RETRY_DELAYS):
        assert nominal * 0.8 - 2 <= delay <= nominal * 1.2 + 1
    assert len({r["id"] for r in receiver.requests}) == 1  # one event id across every retry

    receiver.answer = 204
    r = connect.client.post(f"/v1/webhook-deliveries/{item['id']}/retry", headers=connect.auth)
    assert r.status_code == 200 and r.get_json()["status"] == "pending"
    assert deliver(connect)["delivered"] == 1
    assert deliveries(connect)[0]["status"] == "delivered"
    assert connect.client.post("/v1/webhook-deliveries/whd_nope/retry", headers=connect.auth).status_code == 404
    r = connect.client.get("/v1/webhook-deliveries?status=bogus", headers=connect.auth)
    assert r.status_code == 400 and "status" in r.get_json()["error"]["details"]


def test_an_endpoint_failing_for_five_days_is_disabled(connect, receiver, app_with_key):
    endpoint = make_endpoint(connect, receiver)
    receiver.answer = 503
    submit(connect, app_with_key, "u")
    deliver(connect)
    with connect.app.app_context(), database.connection_context():  # it has been failing since 5 days ago
        WebhookEndpoint.update(failing_since=utcnow() - datetime.timedelta(days=5, minutes=1)).execute()
    advance_clock(connect)
    deliver(connect)
    shown = connect.client.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=connect.auth).get_json()
    assert shown["disabled"] is True and shown["disabled_at"]
    assert {d["status"] for d in deliveries(connect)} == {"failed"}
    before = len(receiver.requests)
    submit(connect, app_with_key, "v")  # a disabled endpoint gets no new deliveries
    assert deliveries(connect, status="pending") == []
    deliver(connect)
    assert len(receiver.requests) == before
    item = deliveries(connect)[0]
    assert connect.client.post(f"/v1/webhook-deliveries/{item['id']}/retry", headers=connect.auth).status_code == 409


def test_rotated_secret_signs_beside_the_old_one_for_a_day(connect, receiver, app_with_key):
    endpoint = make_endpoint(connect, receiver)
    old = receiver.secrets[0]
    r = connect.client.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", headers=connect.auth)
    assert r.status_code == 200
    new = r.get_json()["secret"]
    assert new != old and new.startswith("whsec_")
    receiver.secrets.append(new)
    submit(connect, app_with_key, "u")
    deliver(connect)
    assert receiver.requests and all(set(req["verified"]) == {old, new} for req in receiver.requests)
    assert all(len(req["headers"]["webhook-signature"].split(" ")) == 2 for req in receiver.requests)
    with connect.app.app_context(), database.connection_context():  # a day later only the new one signs
        WebhookEndpoint.update(previous_secret_until=utcnow() - datetime.timedelta(seconds=1)).execute()
    receiver.requests.clear()
    submit(connect, app_with_key, "w")
    deliver(connect)
    assert receiver.requests and all(req["verified"] == [new] for req in receiver.requests)


def test_a_rolled_back_change_emits_nothing(connect, receiver, app_with_key):
    make_endpoint(connect, receiver)
    with connect.app.test_request_context(), database.connection_context():
        app = App.get_by_id(app_with_key["id"])
        req = requirements.find_requirement(app, connect.requirement_id(app_with_key, "helpdesk"))
        with pytest.raises(RuntimeError), database.atomic():
            requirements.submit_config(app, "u", req, {"type": HTTP_API_KEY, "config": {
                "url": "https://h.example.com", "api_key": "k"}})
            assert WebhookEvent.select().count() == 2  # written with the change...
            raise RuntimeError("the surrounding transaction fails")
        assert WebhookEvent.select().count() == 0 and WebhookDelivery.select().count() == 0  # ...and gone with it
        assert Connection.select().count() == 0
    token = connect.token(app_with_key, "u")  # a refused submission (400) emits nothing either
    r = connect.submit_credentials(token, connect.requirement_id(app_with_key, "helpdesk"), HTTP_API_KEY, {"url": 1})
    assert r.status_code == 400
    assert deliver(connect)["delivered"] == 0 and receiver.requests == []


# --- several deliverers -------------------------------------------------------------------------

def test_concurrent_claims_never_share_a_delivery(connect, receiver, app_with_key):
    make_endpoint(connect, receiver)
    for user in range(10):
        submit(connect, app_with_key, f"u{user}")  # 20 deliveries
    results: dict[str, list[str]] = {}
    barrier = threading.Barrier(4)

    def claimer(name):
        with connect.app.app_context(), database.connection_context():
            barrier.wait()
            results[name] = webhook_delivery.claim(name, 8, 60)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [d for ids in results.values() for d in ids]
    assert len(claimed) == len(set(claimed)) == 20


def _cli_env(connect, tmp_path):
    cfg = connect.app.config["CONNECT"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECT_")}
    env.update(CONNECT_ENV="testing", CONNECT_SECRET_KEY=cfg["secret_key"],
               CONNECT_ENCRYPTION_KEYS=",".join(cfg["encryption_keys"]), CONNECT_PUBLIC_URL=cfg["public_url"],
               CONNECT_INSTANCE_PATH=str(tmp_path), CONNECT_DATABASE_URL=cfg["database_url"],
               CONNECT_ALLOWED_PRIVATE_HOSTS="127.0.0.1,localhost")
    return env


def test_a_deliverer_killed_mid_batch_loses_nothing_and_repeats_no_accepted_delivery(
        connect, receiver, app_with_key, tmp_path):
    make_endpoint(connect, receiver, events=["connection.created"])
    for user in range(5):
        submit(connect, app_with_key, f"u{user}")
    receiver.hang_on = 3  # the third request hangs: the deliverer is killed while waiting for it
    proc = subprocess.Popen([BIN, "deliver-webhooks", "--batch-size", "5"], env=_cli_env(connect, tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert receiver.hanging.wait(60), proc.stderr.read1() if proc.poll() is not None else "no third request"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    receiver.release()
    assert len(receiver.accepted) == 2
    states = {d["event_id"]: d["status"] for d in deliveries(connect)}
    assert sorted(states.values()) == ["delivered", "delivered", "pending", "pending", "pending"]
    assert deliver(connect)["delivered"] == 0  # the dead deliverer's lease still holds the rest

    advance_clock(connect)  # its lease runs out
    totals = deliver(connect)
    assert totals["delivered"] == 3
    assert {d["status"] for d in deliveries(connect)} == {"delivered"}
    assert sorted(receiver.accepted) == sorted(states)  # each event accepted exactly once
    assert receiver.errors == []


def test_deliver_webhooks_once_from_the_command_line(connect, receiver, app_with_key, tmp_path):
    make_endpoint(connect, receiver)
    submit(connect, app_with_key, "u")
    proc = subprocess.run([BIN, "deliver-webhooks", "--once"], env=_cli_env(connect, tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"delivered": 2, "pending": 0, "failed": 0}
    assert "2 delivered" in proc.stderr
    assert len(receiver.accepted) == 2


# --- OAuth connections: authorization, re-authorization, refresh, refused refresh --------------------

@pytest.fixture
def approving(server):
    server.auto_approve, server.auto_deny = True, False
    return server


def test_oauth_lifecycle_events(connect, receiver, approving):
    server = approving
    endpoint = make_endpoint(connect, receiver)
    cred = make_credential(connect, server)
    app = connect.create_app_with_requirements([requirement(OAUTH2)])
    token = connect.token(app, "user-1")
    req_id = connect.requirement_id(app, "account")

    def sign_in():
        r = authorize(connect, token, req_id)
        assert r.status_code == 201, r.get_json()
        assert connect.client.get(browser_to_callback(r.get_json()["authorization_url"])).status_code == 200
        return r.get_json()["connection_id"]

    conn_id = sign_in()
    assert sign_in() == conn_id  # re-authorized
    read = connect.client.get(f"/v1/connections/{conn_id}?include_secrets=true&refresh=force", headers=connect.auth)
    assert read.status_code == 200
    refresh_token = read.get_json()["settings"]["oauth"]["credentials"]["refresh_token"]
    server.revoke_family(refresh_token)  # the user disconnected us at the provider
    failed = connect.client.get(f"/v1/connections/{conn_id}?include_secrets=true&refresh=force",
                                headers=connect.auth)
    assert failed.status_code == 502
    deliver(connect)
    got = [(p["type"], p["data"].get("status")) for p in receiver.payloads()]
    assert sorted(got) == sorted([("connection.created", "active"), ("requirement.completed", None),
                                  ("connection.updated", "active"), ("connection.refreshed", "active"),
                                  ("connection.refresh_failed", "error")])
    failure = receiver.payloads("connection.refresh_failed")[0]["data"]
    assert failure["id"] == conn_id and "invalid_grant" in failure["error"]
    text = json.dumps(receiver.requests)
    assert refresh_token not in text and cred["_secret"] not in text
    assert {d["endpoint_id"] for d in deliveries(connect)} == {endpoint["id"]}


def test_a_failed_first_authorization_emits_connection_error(connect, receiver, approving):
    server = approving
    make_endpoint(connect, receiver)
    make_credential(connect, server)
    app = connect.create_app_with_requirements([requirement(OAUTH2)])
    token = connect.token(app, "user-1")
    r = authorize(connect, token, connect.requirement_id(app, "account"))
    server.auto_deny = True
    try:
        result = connect.client.get(browser_to_callback(r.get_json()["authorization_url"]))
    finally:
        server.auto_deny = False
    assert result.status_code == 400
    deliver(connect)
    [payload] = receiver.payloads()
    assert payload["type"] == "connection.error" and payload["data"]["status"] == "error"
    assert payload["data"]["error"].startswith("authorization failed")


def test_an_empty_app_id_is_a_400_naming_it(connect):
    """Found by the conformance run: ``"app_id": ""`` skipped the org check and failed on the foreign key (500)."""
    for app_id in ("", "   "):
        r = connect.client.post("/v1/webhook-endpoints", json={"url": "https://hooks.example.com/x", "app_id": app_id},
                                headers=connect.auth)
        assert r.status_code == 400 and "app_id" in r.get_json()["error"]["details"], r.get_json()
    assert WebhookEndpoint.select().count() == 0

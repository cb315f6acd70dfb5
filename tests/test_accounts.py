"""The action-account core: the ActionAccountType contract, the facade's value types, webhook values."""
from __future__ import annotations

import threading
from urllib.parse import urlsplit

import pytest
from marshmallow import Schema

from connect_service import Account, ActionAccountType, ConnectionType, fields, hookimpl
from connect_service.account_context import user_ref
from connect_service.accounts import sign_webhook_value, verify_webhook_value
from connect_service.db import database
from connect_service.models import WebhookEvent
from connect_service.testing import make_config


class Spec(Schema):
    app = fields.NonBlank(required=True)


class Keyed(ActionAccountType):
    name = "tests.accounts.Keyed"
    title = "Keyed"
    connector_name = "keyed"
    spec_schema = Spec

    def account_key(self, spec):
        return spec["app"]


def test_action_account_types_subclass_the_base():
    class Plain(ConnectionType):
        name = "tests.accounts.Plain"
        title = "Plain"
        auth = "action_account"
        connector_name = "plain"

    with pytest.raises(TypeError, match="action_account types subclass ActionAccountType"):
        Plain.check_definition()
    Keyed.check_definition()
    assert Keyed.auth == "action_account" and Keyed.describe()["auth"] == "action_account"

    class BadSpec(Keyed):
        name = "tests.accounts.BadSpec"
        spec_schema = dict

    with pytest.raises(TypeError, match="`spec_schema` must be a marshmallow Schema subclass"):
        BadSpec.check_definition()


def test_the_type_judges_its_spec_and_key():
    assert Keyed.spec_errors({"app": "gmail", "credential_id": "ccfg_x"}) == {}  # unknown keys pass
    assert Keyed.spec_errors({}) == {"app": ["Missing data for required field."]}
    assert Keyed.requirement_key({"app": "gmail"}) == "gmail"
    assert Keyed.requirement_key({"app": " "}) is None  # no longer loads: matches no account
    assert Keyed.requirement_key(None) is None

    class Any_(ActionAccountType):
        name = "tests.accounts.Any"
        title = "Any"
        connector_name = "any"

    assert Any_.requirement_key({"whatever": 1}) == ""  # default: one key for every account of the type


def test_account_values_are_checked():
    assert Account("acc_1").status == "active"
    with pytest.raises(ValueError, match="non-empty string"):
        Account("")
    with pytest.raises(ValueError, match="'active' or 'error'"):
        Account("acc_1", status="dead")


def test_user_ref_is_stable_opaque_and_per_app():
    ref = user_ref("app-1", "jane@example.com")
    assert ref == user_ref("app-1", "jane@example.com") and ref.startswith("cs-") and len(ref) == 67
    assert "jane" not in ref and ref != user_ref("app-2", "jane@example.com")


def test_webhook_values_are_bound_to_their_connector(connect):
    with connect.app.app_context(), database.connection_context():
        value = sign_webhook_value("keyed", "app-1", "jane", "req-1")
        assert verify_webhook_value("keyed", value) == {"a": "app-1", "u": "jane", "r": "req-1"}
        assert verify_webhook_value("other", value) is None
        assert verify_webhook_value("keyed", value[:-2] + "xx") is None
        assert "jane" not in value and "app-1" not in value


# --- the facade through the real API: a platform held in memory --------------------------------------

class Memo(Keyed):
    """Records what the webhook names (``{"id"}``) and, on lookups, exactly ``Memo.listed[key]``."""

    name = "tests.accounts.Memo"
    title = "Memo"
    connector_name = "memo"
    listed: dict = {}

    def link_account(self, ctx, *, webhook_uri, success_redirect_uri, error_redirect_uri):
        Memo.webhook_uri = webhook_uri
        return {"connect_link_url": "https://memo.example.com/link", "expires_at": "2030-01-01T00:00:00Z"}

    def handle_webhook(self, ctx, body):
        ctx.record_accounts([Account(body["id"], name="memo account", settings={"via": "webhook"})], complete=False)
        Memo.linked = [(a.account_id, a.status, a.settings) for a in ctx.linked_accounts()]
        return {"message": "recorded"}

    def sync_accounts(self, ctx):
        ctx.record_accounts(Memo.listed.get(ctx.key, []), gone_reason="gone from memo")


class MemoPlugin:
    @hookimpl
    def register_connection_types(self):
        return [Memo]


@pytest.fixture
def connect_plugins():
    return [MemoPlugin()]


@pytest.fixture
def connect_config(tmp_path):
    return make_config(tmp_path, account_lookup_seconds=0)


@pytest.fixture
def memo(connect):
    Memo.listed = {}
    app = connect.create_app_with_requirements([
        {"key": "mail", "type": Memo.name, "title": "Mail", "spec": {"type": Memo.name, "data": {"app": "mail"}}},
        {"key": "chat", "type": Memo.name, "title": "Chat", "spec": {"type": Memo.name, "data": {"app": "chat"}}}])
    r = connect.client.post("/v1/credentials", headers=connect.auth, json={
        "name": "Memo", "mode": "OAUTH", "connector_name": "memo", "oauth_client_id": "memo-client",
        "oauth_client_secret": "memo-secret", "oauth_grant_type": "client_credentials"})
    assert r.status_code == 201, r.get_json()
    token = connect.token(app, "user-1")
    r = connect.client.post(f"/v1/connect/requirements/{connect.requirement_id(app, 'mail')}/accounts",
                            headers=connect.bearer(token))
    assert r.status_code == 201, r.get_json()
    return app, token, urlsplit(Memo.webhook_uri).path


def test_accounts_are_recorded_per_key_and_lookups_are_complete(connect, memo):
    app, token, webhook = memo
    mail, chat = connect.requirement_id(app, "mail"), connect.requirement_id(app, "chat")
    r = connect.client.post(webhook, json={"id": "m1"}, base_url="http://connect.test")
    assert r.status_code == 200 and r.get_json() == {"message": "recorded"}
    assert Memo.linked == [("m1", "active", {"account_id": "m1", "via": "webhook"})]
    assert connect.statuses(token) == {mail: "pending", chat: "pending"}  # lookups list nothing: m1 is gone
    assert connect.hooks.of("connection_failed")[-1]["reason"] == "gone from memo"

    Memo.listed = {"mail": [Account("m1", settings={"via": "lookup"}),
                            Account("m2", status="error", reason="expired")]}
    assert connect.statuses(token) == {mail: "completed", chat: "pending"}  # the key is mail's only
    rows = connect.client.get("/v1/connections", headers=connect.auth,
                              query_string={"customer_id": "user-1"}).get_json()["data"]
    by_account = {c["settings"]["account_id"]: c for c in rows}
    assert by_account["m1"]["status"] == "active" and by_account["m1"]["settings"]["via"] == "lookup"
    assert by_account["m1"]["display_name"] == "memo account"  # kept from the first record
    assert by_account["m2"]["status"] == "error" and by_account["m2"]["status_reason"] == "expired"
    assert [h["connection"]["id"] for h in connect.hooks.of("connection_activated")] == [by_account["m1"]["id"]] * 2


def test_concurrent_webhooks_record_one_account_once(connect, memo):
    """Writers of one user's accounts are serialised: two deliveries at once make one row, one hook."""
    _app, _token, webhook = memo
    barrier = threading.Barrier(4)
    answers = []

    def deliver():
        client = connect.app.test_client()
        barrier.wait()
        answers.append(client.post(webhook, json={"id": "same"}, base_url="http://connect.test").status_code)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [200] * 4
    rows = connect.client.get("/v1/connections", headers=connect.auth,
                              query_string={"customer_id": "user-1"}).get_json()["data"]
    assert [c["settings"]["account_id"] for c in rows] == ["same"]
    assert len(connect.hooks.of("connection_activated")) == 1


def test_a_linked_account_completes_its_requirement_once_in_the_outbox(connect, memo):
    """Issue 16: ``requirement.completed`` the first time a user's action-account requirement is completed."""
    app, token, webhook = memo
    mail, chat = connect.requirement_id(app, "mail"), connect.requirement_id(app, "chat")
    Memo.listed = {"mail": [Account("m1")]}
    assert connect.statuses(token) == {mail: "completed", chat: "pending"}
    r = connect.client.post(webhook, json={"id": "m1"}, base_url="http://connect.test")  # the same account again
    assert r.status_code == 200

    def completed():
        with connect.app.app_context():
            return [e.payload["data"] for e in WebhookEvent.select().where(WebhookEvent.type == "requirement.completed")]

    events = completed()
    assert len(events) == 1, events
    assert events[0]["requirement_id"] == mail and events[0]["customer_id"] == "user-1"
    assert events[0]["app_id"] == app["id"]

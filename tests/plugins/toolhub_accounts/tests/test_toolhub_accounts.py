"""The sample action-account plugin end to end, through its installed entry point and the real service.

Everything goes through public surfaces: the management API creates the credential,
the connect API links the account, the stub platform delivers its webhook to the signed
URL, statuses complete, and deleting the connection deletes the account on the platform.
"""
from __future__ import annotations

import importlib.metadata
import json
from urllib.parse import urlsplit

import pytest

from connect_service.testing import make_config
from toolhub_stub import ToolhubStub

SLACK = {"key": "slack", "type": "toolhub_account", "title": "Your Slack",
         "spec": {"type": "toolhub_account", "data": {"toolkit": "slack"}}}


@pytest.fixture(autouse=True)
def _installed():
    try:
        importlib.metadata.distribution("toolhub-accounts")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("toolhub-accounts is not installed: pip install -e tests/plugins/toolhub_accounts")


@pytest.fixture
def toolhub():
    stub = ToolhubStub()
    try:
        yield stub
    finally:
        stub.stop()


@pytest.fixture
def connect_config(tmp_path):
    return make_config(tmp_path, account_lookup_seconds=0)  # every statuses read asks the platform


@pytest.fixture
def slack_app(connect, toolhub):
    app = connect.create_app_with_requirements([SLACK])
    r = connect.client.post("/v1/credentials", headers=connect.auth, json={
        "name": "Toolhub", "mode": "OAUTH", "connector_name": "toolhub", "oauth_client_id": toolhub.workspace,
        "oauth_client_secret": toolhub.api_key, "oauth_grant_type": "client_credentials",
        "settings": {"api_base_url": toolhub.url}})
    assert r.status_code == 201, r.get_json()
    return app


def deliver_into(connect):
    """deliver(url, payload): the platform's webhook POST, into the service's test client."""
    def deliver(url, payload):
        parts = urlsplit(url)
        return connect.client.post(parts.path, data=json.dumps(payload), content_type="application/json",
                                   base_url=f"{parts.scheme}://{parts.netloc}")
    return deliver


def link(connect, token, requirement_id):
    return connect.client.post(f"/v1/connect/requirements/{requirement_id}/accounts", headers=connect.bearer(token))


def test_registered_from_its_distribution(connect):
    assert connect.registry.plugin_of("toolhub_account").distribution == "toolhub-accounts"
    item = next(t for t in connect.connection_types() if t["name"] == "toolhub_account")
    assert (item["auth"], item["connector_name"]) == ("action_account", "toolhub")


def test_links_an_account_end_to_end(connect, toolhub, slack_app):
    token = connect.token(slack_app, "jane@example.com")
    rid = connect.requirement_id(slack_app, "slack")
    assert connect.statuses(token) == {rid: "pending"}

    r = link(connect, token, rid)
    assert r.status_code == 201, r.get_json()
    link_url = r.get_json()["connect_link_url"]
    assert link_url.startswith(toolhub.url + "/link/")
    [sent] = toolhub.links.values()
    assert sent["toolkit"] == "slack" and sent["user"].startswith("cs-") and "jane" not in json.dumps(sent)
    assert sent["callback_url"].startswith("http://connect.test/v1/connect/webhooks/toolhub/")
    assert toolhub.session_requests == [{"workspace": toolhub.workspace, "api_key": toolhub.api_key}]

    r = toolhub.complete_link(link_url, deliver_into(connect))
    assert r.status_code == 200, r.get_json()
    assert r.get_json() == {"message": "recorded"}
    assert connect.statuses(token) == {rid: "completed"}
    [activated] = connect.hooks.of("connection_activated")
    assert activated["connection"]["connector_name"] == "toolhub"

    r = connect.client.get("/v1/connections", headers=connect.auth, query_string={"customer_id": "jane@example.com"})
    [conn] = r.get_json()["data"]
    assert conn["type"] == "toolhub_account" and conn["display_name"] == "jane@example.com"
    [account_id] = toolhub.accounts
    assert conn["settings"] == {"account_id": account_id, "toolkit": "slack", "state": "active"}
    assert toolhub.api_key not in r.get_data(as_text=True)
    # one session token served every call: the facade's token cache
    assert len(toolhub.session_requests) == 1

    # revoked on the platform: the next lookup (ctx.linked_accounts re-read) moves it to error
    toolhub.accounts[account_id]["state"] = "expired"
    assert connect.statuses(token) == {rid: "pending"}
    [failed] = connect.hooks.of("connection_failed")
    assert failed["reason"] == "the account is expired on Toolhub"
    toolhub.accounts[account_id]["state"] = "active"
    assert connect.statuses(token) == {rid: "completed"}

    # deleting the connection deletes the account on the platform
    assert connect.client.delete(f"/v1/connections/{conn['id']}", headers=connect.auth).status_code == 204
    assert toolhub.accounts == {} and ("DELETE", f"/v2/accounts/{account_id}") in toolhub.requests
    assert connect.statuses(token) == {rid: "pending"}


def test_gone_from_the_platform_goes_to_error(connect, toolhub, slack_app):
    token = connect.token(slack_app, "bob")
    rid = connect.requirement_id(slack_app, "slack")
    r = link(connect, token, rid)
    assert r.status_code == 201
    assert toolhub.complete_link(r.get_json()["connect_link_url"], deliver_into(connect)).status_code == 200
    assert connect.statuses(token) == {rid: "completed"}
    toolhub.accounts.clear()
    assert connect.statuses(token) == {rid: "pending"}
    assert connect.hooks.of("connection_failed")[-1]["reason"] == "the account no longer exists on Toolhub"


def test_webhook_for_another_users_account_is_refused(connect, toolhub, slack_app):
    token = connect.token(slack_app, "bob")
    rid = connect.requirement_id(slack_app, "slack")
    assert link(connect, token, rid).status_code == 201
    [sent] = toolhub.links.values()
    theirs = toolhub.add_account("cs-someone-else", "slack")
    r = deliver_into(connect)(sent["callback_url"], {"type": "account.linked", "account_id": theirs["id"]})
    assert r.status_code == 400
    assert r.get_json()["error"]["details"] == {
        "account_id": "is not a Toolhub account of this user for this toolkit"}
    r = deliver_into(connect)(sent["callback_url"] + "x", {"type": "account.linked", "account_id": theirs["id"]})
    assert r.status_code == 401
    assert connect.statuses(token) == {rid: "pending"}


def test_platform_down_is_bad_gateway_and_statuses_still_answer(connect, toolhub, slack_app):
    token = connect.token(slack_app, "bob")
    rid = connect.requirement_id(slack_app, "slack")
    toolhub.stop()
    r = link(connect, token, rid)
    assert r.status_code == 502
    assert r.get_json()["error"]["details"]["platform"].startswith("could not reach Toolhub")
    assert connect.statuses(token) == {rid: "pending"}


def test_requirement_spec_is_judged_by_the_plugin(connect):
    app = connect.create_app()
    r = connect.client.post(f"/v1/apps/{app['id']}/versions", headers=connect.auth, json={"requirements": [
        dict(SLACK, spec={"type": "toolhub_account", "data": {"toolkit": " "}})]})
    assert r.status_code == 400
    assert r.get_json()["error"]["details"] == {"requirements.0.spec.data.toolkit": "cannot be blank"}

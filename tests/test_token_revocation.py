"""Connect tokens can be revoked (issue 12 item 8): per (app, user) and, on public → private, per app.

``DELETE /v1/apps/{id}/users/{user_id}/tokens`` sets the user's ``tokens_valid_after``; every token
minted up to that moment is refused (401 on the API, the "link expired" page on the hosted page),
tokens minted afterwards work, even within the same second.
"""
from __future__ import annotations

import datetime
import logging
import uuid
from urllib.parse import quote

import jwt
import pytest

from connect_service.access_keys import create_access_key
from connect_service.auth import connect_identity
from connect_service.db import database
from connect_service.deploy_file import deploy_from_file
from connect_service.models import App, Organization, TokenRevocation
from connect_service.testing import TEST_SECRET_KEY
from connect_service.tokens import mint_connect_token, signing_kid
from tests.conftest import API_KEY_ONLY
from tests.test_oauth_flow import OAUTH2, authorize, browser_to_callback, make_credential, requirement, server  # noqa: F401

BASE = "http://connect.test"
EXPIRED_TEXT = "This link has expired. Ask the app for a new one."


def revoke(connect, app, user_id, headers=None):
    return connect.client.delete(f"/v1/apps/{app['id']}/users/{quote(user_id, safe='')}/tokens",
                                 headers=connect.auth if headers is None else headers)


def status_of(connect, token) -> int:
    return connect.client.get("/v1/connect/requirements/statuses", headers=connect.bearer(token)).status_code


def utc(dt: datetime.datetime) -> datetime.datetime:
    return dt.replace(tzinfo=datetime.timezone.utc)


# --- per-user revocation --------------------------------------------------------------------------

def test_revoking_a_user_refuses_every_token_minted_before(connect, app_with_key):
    alice_1, alice_2 = connect.token(app_with_key, "alice"), connect.token(app_with_key, "alice")
    bob = connect.token(app_with_key, "bob")
    assert status_of(connect, alice_1) == status_of(connect, alice_2) == 200

    r = revoke(connect, app_with_key, "alice")
    assert r.status_code == 204 and r.get_data() == b""

    assert status_of(connect, alice_1) == status_of(connect, alice_2) == 401
    r = connect.client.get("/v1/connect/requirements", headers=connect.bearer(alice_1))
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "unauthorized"
    rid = connect.requirement_id(app_with_key, "helpdesk")
    r = connect.submit_credentials(alice_1, rid, "dynamiq.connections.HttpApiKey",
                                   {"url": "https://helpdesk.example.com", "api_key": "k"})
    assert r.status_code == 401
    assert status_of(connect, bob) == 200  # another user of the same app keeps working
    fresh = connect.token(app_with_key, "alice")  # minted after the revocation: works at once
    assert status_of(connect, fresh) == 200


def test_revocation_is_per_app(connect, app_with_key):
    other_app = connect.create_app_with_requirements(API_KEY_ONLY)
    here, there = connect.token(app_with_key, "alice"), connect.token(other_app, "alice")
    assert revoke(connect, app_with_key, "alice").status_code == 204
    assert status_of(connect, here) == 401
    assert status_of(connect, there) == 200


def test_revoked_token_shows_the_link_expired_page(connect, app_with_key):
    browser = connect.app.test_client()
    token = connect.token(app_with_key, "alice")
    r = browser.get(f"/connect?token={token}", base_url=BASE)
    assert r.status_code == 303
    page = r.headers["Location"]
    assert browser.get(page, base_url=BASE).status_code == 200

    assert revoke(connect, app_with_key, "alice").status_code == 204
    r = browser.get(page, base_url=BASE)  # the token in the page's cookie is revoked
    assert r.status_code == 401 and EXPIRED_TEXT in r.get_data(as_text=True)
    r = connect.app.test_client().get(f"/connect?token={token}", base_url=BASE)  # the link itself
    assert r.status_code == 401 and EXPIRED_TEXT in r.get_data(as_text=True)
    assert "Set-Cookie" not in r.headers


def test_same_second_tokens_before_and_after_the_revocation(connect, app_with_key):
    """Clock granularity: ``iat`` counts whole seconds, the revocation is kept to the microsecond."""
    assert revoke(connect, app_with_key, "alice").status_code == 204
    cut = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=500_000) - datetime.timedelta(seconds=2)
    with connect.app.app_context(), database.connection_context():
        TokenRevocation.update(tokens_valid_after=cut.replace(tzinfo=None)).where(
            TokenRevocation.app == app_with_key["id"], TokenRevocation.user_id == "alice").execute()
    before, _ = mint_connect_token(TEST_SECRET_KEY, BASE, app_with_key["id"], "alice",
                                   now=cut - datetime.timedelta(microseconds=1))
    after, _ = mint_connect_token(TEST_SECRET_KEY, BASE, app_with_key["id"], "alice",
                                  now=cut + datetime.timedelta(microseconds=1))
    claims = [jwt.decode(t, options={"verify_signature": False}) for t in (before, after)]
    assert claims[0]["iat"] == claims[1]["iat"] == int(cut.timestamp())  # the very same second
    assert status_of(connect, before) == 401
    assert status_of(connect, after) == 200


def test_a_token_without_sub_second_time_counts_from_the_start_of_its_second(connect, app_with_key):
    """Tokens minted by a release without the sub-second claim: revoked if issued in the revocation's second."""
    assert revoke(connect, app_with_key, "alice").status_code == 204
    with connect.app.app_context(), database.connection_context():
        cut = utc(TokenRevocation.get(TokenRevocation.app == app_with_key["id"]).tokens_valid_after)
    second = int(cut.timestamp())
    claims = {"iss": BASE, "aud": "connect", "sub": "alice", "app": app_with_key["id"], "iat": second,
              "exp": second + 3600, "jti": uuid.uuid4().hex}
    old = jwt.encode(claims, TEST_SECRET_KEY.encode(), algorithm="HS256", headers={"kid": signing_kid(TEST_SECRET_KEY)})
    assert status_of(connect, old) == 401
    claims.update(iat=second + 1, jti=uuid.uuid4().hex)
    later = jwt.encode(claims, TEST_SECRET_KEY.encode(), algorithm="HS256",
                       headers={"kid": signing_kid(TEST_SECRET_KEY)})
    assert status_of(connect, later) == 200


def test_revoking_again_moves_the_cut(connect, app_with_key):
    assert revoke(connect, app_with_key, "alice").status_code == 204
    token = connect.token(app_with_key, "alice")
    assert status_of(connect, token) == 200
    assert revoke(connect, app_with_key, "alice").status_code == 204
    assert status_of(connect, token) == 401


@pytest.mark.parametrize("user_id", ["alice/with/slashes", "ü ñ é", "a%2Fb", "x" * 200])
def test_any_user_id_a_token_can_carry_can_be_revoked(connect, app_with_key, user_id):
    token = connect.token(app_with_key, user_id)
    assert revoke(connect, app_with_key, user_id).status_code == 204
    assert status_of(connect, token) == 401


def test_revocation_needs_the_org_access_key(connect, app_with_key):
    token = connect.token(app_with_key, "alice")
    assert revoke(connect, app_with_key, "alice", headers={}).status_code == 401
    assert revoke(connect, app_with_key, "alice", headers=connect.bearer(token)).status_code == 401
    with connect.app.app_context(), database.connection_context():
        other_org = Organization.create(name="Other org")
        _, other_key = create_access_key(other_org, "other")
    r = revoke(connect, app_with_key, "alice", headers=connect.bearer(other_key))
    assert r.status_code == 404  # another org's app is not revealed
    r = connect.client.delete("/v1/apps/no-such-app/users/alice/tokens", headers=connect.auth)
    assert r.status_code == 404
    assert status_of(connect, token) == 200


def test_overlong_user_id_is_a_400_naming_it(connect, app_with_key):
    r = revoke(connect, app_with_key, "x" * 201)
    assert r.status_code == 400 and "user_id" in r.get_json()["error"]["details"]


def test_deleting_the_app_deletes_its_revocations(connect, app_with_key):
    assert revoke(connect, app_with_key, "alice").status_code == 204
    assert connect.client.delete(f"/v1/apps/{app_with_key['id']}", headers=connect.auth).status_code == 204
    with connect.app.app_context(), database.connection_context():
        assert not TokenRevocation.select().where(TokenRevocation.app == app_with_key["id"]).exists()


# --- public → private ------------------------------------------------------------------------------

def test_switching_public_to_private_revokes_every_token_of_the_app(connect, app_with_key):
    alice, bob = connect.token(app_with_key, "alice"), connect.token(app_with_key, "bob")
    r = connect.client.patch(f"/v1/apps/{app_with_key['id']}", json={"visibility": "private"}, headers=connect.auth)
    assert r.status_code == 200 and r.get_json()["visibility"] == "private"
    assert status_of(connect, alice) == status_of(connect, bob) == 401
    fresh = connect.token({**app_with_key, "visibility": "private"}, "alice")  # minted with the Access Key
    assert status_of(connect, fresh) == 200


def test_other_app_changes_revoke_nothing(connect, app_with_key):
    token = connect.token(app_with_key, "alice")
    for body in ({"name": "Renamed"}, {"visibility": "public"}, {"return_urls": ["https://x.example.com/back"]}):
        r = connect.client.patch(f"/v1/apps/{app_with_key['id']}", json=body, headers=connect.auth)
        assert r.status_code == 200, r.get_json()
        assert status_of(connect, token) == 200
    private = connect.create_app_with_requirements(API_KEY_ONLY, visibility="private")
    private_token = connect.token(private, "alice")
    r = connect.client.patch(f"/v1/apps/{private['id']}", json={"visibility": "public"}, headers=connect.auth)
    assert r.status_code == 200
    assert status_of(connect, private_token) == 200  # private → public revokes nothing


def test_switching_to_private_through_the_deploy_file_revokes_too(connect, app_with_key):
    token = connect.token(app_with_key, "alice")
    doc = {"app": {"name": app_with_key["name"], "hostname": app_with_key["hostname"], "visibility": "private"},
           "requirements": API_KEY_ONLY}
    with connect.app.app_context():
        result = deploy_from_file(doc, connect.org_id)
    assert result["app"]["visibility"] == "private"
    assert status_of(connect, token) == 401


# --- OAuth flows in progress -----------------------------------------------------------------------

def _two_flows(connect, server, app_visibility="public"):
    server.reset_records()
    server.auto_approve, server.auto_deny, server.down = True, False, False
    make_credential(connect, server)
    app = connect.create_app_with_requirements([requirement(OAUTH2)], visibility=app_visibility)
    rid = connect.requirement_id(app, "account")
    started = {user: authorize(connect, connect.token(app, user), rid) for user in ("alice", "bob")}
    for r in started.values():
        assert r.status_code == 201, r.get_json()
    return app, {user: r.get_json()["authorization_url"] for user, r in started.items()}


def test_revocation_ends_the_users_oauth_flows_in_progress(connect, server):
    """A flow started with a token that is then revoked cannot complete (its state expires with it)."""
    app, urls = _two_flows(connect, server)
    assert revoke(connect, app, "alice").status_code == 204
    result = connect.client.get(browser_to_callback(urls["alice"]))
    assert result.status_code == 400 and b"expired" in result.data
    assert server.token_calls() == 0
    assert connect.client.get(browser_to_callback(urls["bob"])).status_code == 200  # bob's flow is untouched
    assert server.token_calls() == 1


def test_switching_to_private_ends_every_oauth_flow_in_progress(connect, server):
    app, urls = _two_flows(connect, server)
    r = connect.client.patch(f"/v1/apps/{app['id']}", json={"visibility": "private"}, headers=connect.auth)
    assert r.status_code == 200
    for url in urls.values():
        result = connect.client.get(browser_to_callback(url))
        assert result.status_code == 400 and b"expired" in result.data
    assert server.token_calls() == 0


# --- cost of the check ------------------------------------------------------------------------------

class _Queries(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.sql: list[str] = []

    def emit(self, record):
        self.sql.append(str(record.msg[0]) if isinstance(record.msg, tuple) else record.getMessage())


def test_verification_is_one_query(connect, app_with_key):
    """The app and both revocation cut-offs come from one indexed lookup (no query per check)."""
    token = connect.token(app_with_key, "alice")
    assert revoke(connect, app_with_key, "bob").status_code == 204
    logger = logging.getLogger("peewee")
    handler, level = _Queries(), logger.level
    with connect.app.test_request_context(), database.connection_context():
        connect_identity(token)  # first use on this connection: PostgreSQL prepares the statement
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        try:
            found = connect_identity(token)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
    assert found is not None and found[1].id == app_with_key["id"]
    assert len(handler.sql) == 1, handler.sql
    # the SELECT itself, or on PostgreSQL the EXECUTE of its prepared statement (db.execute_compiled)
    assert handler.sql[0].lstrip().upper().startswith(("SELECT", "EXECUTE CONNECT_")), handler.sql
    with connect.app.app_context(), database.connection_context():
        assert App.get_by_id(app_with_key["id"]).tokens_valid_after is None

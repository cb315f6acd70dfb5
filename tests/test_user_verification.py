"""End-user identity (issue 12 items 9 and 10): verified user ids on token minting, "Connecting for …".

An app with ``user_verification: "required"`` mints connect tokens only when the request carries
``user_id_signature`` = hex HMAC-SHA256(user_verification_secret, user_id), as Intercom's identity
verification does; the secret is shown once (creation, switching on, rotation) and stored encrypted.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import json
import secrets
from html import unescape

import jwt
import pytest

from connect_service.db import database
from connect_service.deploy_file import deploy_from_file
from connect_service.extensions import keyring
from connect_service.models import App
from tests.conftest import API_KEY_ONLY

BASE = "http://connect.test"


def sign(secret: str, user_id: str) -> str:
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def mint(connect, app, body, with_key=None):
    headers = {"Host": app["hostname"], "Content-Type": "application/json"}
    if with_key if with_key is not None else app["visibility"] == "private":
        headers.update(connect.auth)
    # the stdlib encoder, not the app's: the app's strict JSON provider would clean a lone surrogate away
    return connect.client.post("/v1/connect/tokens", data=json.dumps(body), headers=headers)


def create(connect, **body):
    body = {"name": "Verified", "hostname": f"verified-{secrets.token_hex(4)}.test", "visibility": "public", **body}
    r = connect.client.post("/v1/apps", json=body, headers=connect.auth)
    assert r.status_code == 201, r.get_json()
    return r.get_json()


@pytest.fixture
def verified_app(connect):
    app = create(connect, user_verification="required")
    connect.deploy(app, API_KEY_ONLY)
    return app


# --- the setting and its secret ------------------------------------------------------------------

def test_default_is_none_and_minting_needs_no_signature(connect, app_with_key):
    assert app_with_key["user_verification"] == "none"
    assert "user_verification_secret" not in app_with_key
    r = mint(connect, app_with_key, {"user_id": "alice"})  # seed 001 stays as it was
    assert r.status_code == 201 and set(r.get_json()) == {"token", "expires_at", "connect_url"}


def test_required_app_shows_its_secret_once(connect, verified_app):
    secret = verified_app["user_verification_secret"]
    assert verified_app["user_verification"] == "required" and re.fullmatch(r"uvs_[A-Za-z0-9_-]{40,}", secret)
    one = connect.client.get(f"/v1/apps/{verified_app['id']}", headers=connect.auth)
    listed = connect.client.get("/v1/apps", headers=connect.auth)
    for r in (one, listed):
        assert r.status_code == 200 and secret not in r.get_data(as_text=True)
    assert one.get_json()["user_verification"] == "required"
    assert "user_verification_secret" not in one.get_json()


def test_secret_is_encrypted_at_rest(connect, verified_app):
    secret = verified_app["user_verification_secret"]
    with connect.app.app_context(), database.connection_context():
        row = App.get_by_id(verified_app["id"])
        assert secret not in row.user_verification_secret_encrypted
        assert keyring().decrypt_json(row.user_verification_secret_encrypted, "app", "user_verification_secret",
                                      row.id) == secret


def test_required_app_refuses_a_token_without_a_valid_signature(connect, verified_app):
    secret = verified_app["user_verification_secret"]
    attempts = [
        {"user_id": "alice"},                                              # missing
        {"user_id": "alice", "user_id_signature": sign(secret, "bob")},    # another user's signature
        {"user_id": "alice", "user_id_signature": sign("guess", "alice")},  # wrong secret
        {"user_id": "alice", "user_id_signature": sign(secret, "alice")[:-1]},  # truncated
        {"user_id": "alice", "user_id_signature": "zz" * 32},              # not hex
        {"user_id": "alice", "user_id_signature": ""},
        {"user_id": "alice", "user_id_signature": None},
    ]
    for body in attempts:
        r = mint(connect, verified_app, body)
        assert r.status_code == 401, (body, r.get_json())
        assert r.get_json()["error"]["code"] == "unauthorized"
        assert secret not in r.get_data(as_text=True)
    r = mint(connect, verified_app, {"user_id": "alice", "user_id_signature": sign(secret, "alice")})
    assert r.status_code == 201, r.get_json()
    claims = jwt.decode(r.get_json()["token"], options={"verify_signature": False})
    assert claims["sub"] == "alice"
    r = mint(connect, verified_app, {"user_id": "alice", "user_id_signature": sign(secret, "alice").upper()})
    assert r.status_code == 201  # hex is hex


def test_unicode_user_ids_are_signed_as_utf8(connect, verified_app):
    secret = verified_app["user_verification_secret"]
    r = mint(connect, verified_app, {"user_id": "jürgen@例え.jp", "user_id_signature": sign(secret, "jürgen@例え.jp")})
    assert r.status_code == 201, r.get_json()


def test_private_required_app_needs_both_key_and_signature(connect):
    app = create(connect, visibility="private", user_verification="required")
    good = {"user_id": "alice", "user_id_signature": sign(app["user_verification_secret"], "alice")}
    assert mint(connect, app, good, with_key=False).status_code == 401
    assert mint(connect, app, {"user_id": "alice"}, with_key=True).status_code == 401
    assert mint(connect, app, good, with_key=True).status_code == 201


def test_a_signature_sent_to_an_app_without_verification_is_ignored(connect, app_with_key):
    r = mint(connect, app_with_key, {"user_id": "alice", "user_id_signature": "ab" * 32})
    assert r.status_code == 201


def test_bad_field_types_are_400_naming_the_field(connect, app_with_key):
    for body, field in [({"user_id": "a", "user_id_signature": 5}, "user_id_signature"),
                        ({"user_id": "a", "user_id_signature": "a" * 500}, "user_id_signature")]:
        r = mint(connect, app_with_key, body)
        assert r.status_code == 400 and field in r.get_json()["error"]["details"], r.get_json()
    r = connect.client.post("/v1/apps", json={"name": "x", "hostname": "bad-uv.test", "user_verification": "maybe"},
                            headers=connect.auth)
    assert r.status_code == 400 and "user_verification" in r.get_json()["error"]["details"]


def test_a_user_id_with_a_lone_surrogate_is_a_400(connect, app_with_key, verified_app):
    """Claims are UTF-8 JSON: a lone surrogate must be refused before minting, never a 500."""
    for app in (app_with_key, verified_app):
        r = mint(connect, app, {"user_id": "al\ud800ice", "user_id_signature": "ab" * 32})
        assert r.status_code == 400 and "user_id" in r.get_json()["error"]["details"], r.get_json()


def test_rotation_shows_a_new_secret_once_and_the_old_one_stops_working(connect, verified_app):
    old = verified_app["user_verification_secret"]
    r = connect.client.post(f"/v1/apps/{verified_app['id']}/user-verification-secret", headers=connect.auth)
    assert r.status_code == 200, r.get_json()
    new = r.get_json()["user_verification_secret"]
    assert new != old and r.get_json()["id"] == verified_app["id"]
    assert r.headers["Cache-Control"] == "no-store"
    assert mint(connect, verified_app, {"user_id": "alice", "user_id_signature": sign(old, "alice")}).status_code == 401
    assert mint(connect, verified_app, {"user_id": "alice", "user_id_signature": sign(new, "alice")}).status_code == 201
    assert new not in connect.client.get(f"/v1/apps/{verified_app['id']}", headers=connect.auth).get_data(as_text=True)


def test_rotation_needs_the_access_key_and_verification_switched_on(connect, app_with_key, verified_app):
    path = f"/v1/apps/{verified_app['id']}/user-verification-secret"
    assert connect.client.post(path).status_code == 401
    r = connect.client.post(f"/v1/apps/{app_with_key['id']}/user-verification-secret", headers=connect.auth)
    assert r.status_code == 409 and "user_verification" in r.get_json()["error"]["details"]


def test_switching_on_by_patch_shows_the_secret_and_switching_off_drops_it(connect, app_with_key):
    path = f"/v1/apps/{app_with_key['id']}"
    r = connect.client.patch(path, json={"user_verification": "required"}, headers=connect.auth)
    assert r.status_code == 200, r.get_json()
    secret = r.get_json()["user_verification_secret"]
    assert mint(connect, app_with_key, {"user_id": "alice"}).status_code == 401
    assert mint(connect, app_with_key, {"user_id": "alice", "user_id_signature": sign(secret, "alice")}).status_code == 201
    r = connect.client.patch(path, json={"user_verification": "required"}, headers=connect.auth)
    assert r.status_code == 200 and "user_verification_secret" not in r.get_json()  # unchanged: not shown again
    r = connect.client.patch(path, json={"user_verification": "none"}, headers=connect.auth)
    assert r.status_code == 200 and "user_verification_secret" not in r.get_json()
    with connect.app.app_context(), database.connection_context():
        assert App.get_by_id(app_with_key["id"]).user_verification_secret_encrypted is None
    assert mint(connect, app_with_key, {"user_id": "alice"}).status_code == 201


def test_deploy_file_shows_the_secret_once_and_can_switch_verification(connect):
    doc = {"app": {"name": "Filed", "hostname": "filed.example.com", "visibility": "public",
                   "user_verification": "required"}, "requirements": API_KEY_ONLY}
    with connect.app.app_context():
        first = deploy_from_file(doc, connect.org_id)["app"]
        again = deploy_from_file(doc, connect.org_id)["app"]
        doc["app"]["user_verification"] = "none"
        off = deploy_from_file(doc, connect.org_id)["app"]
    assert first["user_verification"] == "required" and first["user_verification_secret"].startswith("uvs_")
    assert "user_verification_secret" not in again and again["user_verification"] == "required"
    assert off["user_verification"] == "none"
    assert mint(connect, off, {"user_id": "alice"}).status_code == 201


# --- "Connecting for …" on the hosted page ------------------------------------------------------------

def page_html(connect, app, body) -> str:
    r = mint(connect, app, body)
    assert r.status_code == 201, r.get_json()
    browser = connect.app.test_client()
    r = browser.get(r.get_json()["connect_url"].removeprefix(BASE), base_url=BASE)
    assert r.status_code == 303
    r = browser.get(r.headers["Location"], base_url=BASE)
    assert r.status_code == 200
    return r.get_data(as_text=True)


def connecting_for(html: str) -> str:
    match = re.search(r'<p class="connecting-for"[^>]*>(.*?)</p>', html, re.S)
    assert match, html
    return unescape(re.sub(r"<[^>]+>", "", match.group(1))).split("Not you?")[0].strip()


def test_page_shows_the_user_display(connect, app_with_key):
    html = page_html(connect, app_with_key, {"user_id": "u_81723", "user_display": "Alice Example (alice@example.com)"})
    assert connecting_for(html) == "Connecting for Alice Example (alice@example.com)"


def test_page_falls_back_to_the_user_id_escaped(connect, app_with_key):
    user_id = '<script>alert(1)</script>&"'
    html = page_html(connect, app_with_key, {"user_id": user_id})
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;" in html
    assert connecting_for(html) == f"Connecting for {user_id}"


@pytest.mark.parametrize("display", ["", "   ", "x" * 65, "Alice\nBob", "Alice\u202eboB", "<b>Alice</b>", 7, "\x00"])
def test_user_display_must_be_short_plain_text(connect, app_with_key, display):
    r = mint(connect, app_with_key, {"user_id": "alice", "user_display": display})
    assert r.status_code == 400, r.get_json()
    assert "user_display" in r.get_json()["error"]["details"]


def test_user_display_rides_in_the_signed_token(connect, app_with_key):
    r = mint(connect, app_with_key, {"user_id": "alice", "user_display": "Alice É."})
    claims = jwt.decode(r.get_json()["token"], options={"verify_signature": False})
    assert claims["sub"] == "alice" and claims["name"] == "Alice É."


def test_longest_display_name_keeps_the_page_cookie_small(connect, app_with_key):
    """Eight page cookies must fit nginx's 8 KB header buffer: claims are UTF-8, not ``\\uXXXX`` escapes."""
    r = mint(connect, app_with_key, {"user_id": "user-12345", "user_display": "\U0001F600" * 64})
    assert r.status_code == 201, r.get_json()
    cookie = len("connect_session_") + 24 + 1 + len(r.get_json()["token"])
    assert cookie * 8 < 8 * 1024

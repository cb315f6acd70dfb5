"""Self-test of the Authlib-based OAuth test server, driven with plain ``requests``."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import threading
import time
from html import unescape
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

from .oauth_server import OAuthTestServer

REDIRECT = "http://127.0.0.1:9/callback"  # never contacted: redirects are not followed


def _pkce():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _query(location: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@pytest.fixture(scope="module")
def server():
    with OAuthTestServer() as srv:
        srv.add_client("basic-client", "basic-secret", [REDIRECT])
        srv.add_client("post-client", "post-secret", [REDIRECT],
                       token_endpoint_auth_method="client_secret_post")
        yield srv


@pytest.fixture(autouse=True)
def _reset(server):
    server.reset_records()
    knobs = dict(access_token_lifetime=3600, include_expires_in=True, jwt_access_tokens=False,
                 token_delay=0.0,
                 down=False, rotate_refresh_tokens=True, send_iss=False, require_pkce=False,
                 auto_approve=False, auto_deny=False)
    for k, v in knobs.items():
        setattr(server, k, v)
    yield
    assert server.errors == []


def _authorize_via_consent_page(server, client_id, *, decision="Allow", scope="openid offline_access",
                                **extra):
    verifier, challenge = _pkce()
    state = secrets.token_urlsafe(16)
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": scope,
              "state": state, "code_challenge": challenge, "code_challenge_method": "S256", **extra}
    page = requests.get(server.authorize_url, params=params, allow_redirects=False, timeout=5)
    assert page.status_code == 200, page.text
    assert client_id in page.text
    for s in scope.split():
        assert s in unescape(page.text)
    action = unescape(re.search(r'<form method="post" action="([^"]+)"', page.text).group(1))
    assert re.search(r"<button[^>]*>Allow</button>", page.text)
    assert re.search(r"<button[^>]*>Deny</button>", page.text)
    resp = requests.post(urljoin(server.url, action), data={"decision": decision.lower()},
                         allow_redirects=False, timeout=5)
    assert resp.status_code == 302, resp.text
    assert resp.headers["Location"].startswith(REDIRECT + "?")
    q = _query(resp.headers["Location"])
    assert q["state"] == state
    return q, verifier


def _exchange(server, client_id, secret, code, verifier, method):
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "code_verifier": verifier}
    if method == "client_secret_basic":
        return requests.post(server.token_url, data=data, auth=(client_id, secret), timeout=5)
    data.update(client_id=client_id, client_secret=secret)
    return requests.post(server.token_url, data=data, timeout=5)


def _refresh(server, refresh_token, client=("basic-client", "basic-secret")):
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return requests.post(server.token_url, data=data, auth=client, timeout=5)


def _userinfo(server, access_token):
    return requests.get(server.userinfo_url, headers={"Authorization": f"Bearer {access_token}"}, timeout=5)


def _full_flow(server, client_id="basic-client", secret="basic-secret", method="client_secret_basic"):
    q, verifier = _authorize_via_consent_page(server, client_id)
    resp = _exchange(server, client_id, secret, q["code"], verifier, method)
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.mark.parametrize("client_id,secret,method", [
    ("basic-client", "basic-secret", "client_secret_basic"),
    ("post-client", "post-secret", "client_secret_post"),
])
def test_auth_code_pkce_flow(server, client_id, secret, method):
    q, verifier = _authorize_via_consent_page(server, client_id, prompt="consent", access_type="offline",
                                              scope="https://www.googleapis.com/auth/drive.readonly repo")
    assert "iss" not in q
    recorded = server.authorize_requests[-1]
    assert recorded["prompt"] == "consent" and recorded["access_type"] == "offline"
    assert recorded["code_challenge_method"] == "S256"

    resp = _exchange(server, client_id, secret, q["code"], verifier, method)
    assert resp.status_code == 200, resp.text
    tok = resp.json()
    assert tok["token_type"] == "Bearer" and tok["expires_in"] == 3600 and tok["refresh_token"]
    assert tok["scope"] == "https://www.googleapis.com/auth/drive.readonly repo"
    call = server.token_requests[-1]
    assert call["auth_method"] == method == call["authenticated_method"]
    assert call["client_id"] == client_id and call["form"]["code_verifier"] == verifier
    assert server.token_calls("authorization_code") == 1

    info = _userinfo(server, tok["access_token"])
    assert info.status_code == 200 and info.json() == {"sub": "user-1", "email": "user@example.com"}
    assert server.token_is_active(tok["access_token"])

    # a code is single use; the replay also revokes what the code produced
    again = _exchange(server, client_id, secret, q["code"], verifier, method)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert not server.token_is_active(tok["access_token"])


def test_wrong_verifier_and_wrong_auth_method(server):
    q, _ = _authorize_via_consent_page(server, "basic-client")
    bad = _exchange(server, "basic-client", "basic-secret", q["code"], "x" * 43, "client_secret_basic")
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"
    q, verifier = _authorize_via_consent_page(server, "basic-client")
    wrong = _exchange(server, "basic-client", "basic-secret", q["code"], verifier, "client_secret_post")
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"


def test_refresh_rotation_and_reuse_revokes_family(server):
    first = _full_flow(server)
    r1 = _refresh(server, first["refresh_token"])
    assert r1.status_code == 200, r1.text
    second = r1.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert server.token_is_active(second["access_token"]) and server.token_is_active(first["access_token"])
    assert not server.refresh_token_is_active(first["refresh_token"])

    r2 = _refresh(server, second["refresh_token"])
    assert r2.status_code == 200
    third = r2.json()
    assert _userinfo(server, third["access_token"]).status_code == 200

    reuse = _refresh(server, first["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    assert _userinfo(server, third["access_token"]).status_code == 401
    assert not server.token_is_active(second["access_token"])
    assert _refresh(server, third["refresh_token"]).json()["error"] == "invalid_grant"
    assert server.family_revocations[-1]["reason"] == "refresh_token_reuse"
    assert server.token_calls("refresh_token") == 4


def test_concurrent_refreshes_with_delay_trip_reuse_detection(server):
    tok = _full_flow(server)
    server.token_delay = 0.2
    results = []
    threads = [threading.Thread(target=lambda: results.append(_refresh(server, tok["refresh_token"])))
               for _ in range(2)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - start < 1.0
    assert sorted(r.status_code for r in results) == [200, 400]
    winner = next(r for r in results if r.status_code == 200).json()
    assert not server.token_is_active(winner["access_token"])  # the family went with the reuse


def test_no_rotation_omits_refresh_token(server):
    tok = _full_flow(server)
    server.rotate_refresh_tokens = False
    for _ in range(2):
        r = _refresh(server, tok["refresh_token"])
        assert r.status_code == 200 and "refresh_token" not in r.json()


def test_client_credentials(server):
    r = requests.post(server.token_url, data={"grant_type": "client_credentials", "scope": "read"},
                      auth=("basic-client", "basic-secret"), timeout=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert "refresh_token" not in body and body["scope"] == "read"
    assert _userinfo(server, body["access_token"]).json()["sub"] == "basic-client"
    r = requests.post(server.token_url, data={"grant_type": "client_credentials", "client_id": "post-client",
                                              "client_secret": "post-secret"}, timeout=5)
    assert r.status_code == 200
    assert server.token_calls("client_credentials") == 2


def test_down_gives_503_html(server):
    server.down = True
    r = requests.post(server.token_url, data={"grant_type": "client_credentials"},
                      auth=("basic-client", "basic-secret"), timeout=5)
    assert r.status_code == 503 and r.headers["Content-Type"].startswith("text/html")
    assert server.token_calls() == 1


def test_expires_in_knobs_and_jwt(server):
    server.include_expires_in = False
    server.jwt_access_tokens = True
    server.access_token_lifetime = 120
    r = requests.post(server.token_url, data={"grant_type": "client_credentials"},
                      auth=("basic-client", "basic-secret"), timeout=5)
    body = r.json()
    assert "expires_in" not in body
    claims = server.decode_jwt(body["access_token"])
    assert abs(claims["exp"] - (time.time() + 120)) < 5
    server.expire_access_token(body["access_token"])
    assert _userinfo(server, body["access_token"]).status_code == 401


def test_deny_and_auto_modes(server):
    q, _ = _authorize_via_consent_page(server, "basic-client", decision="Deny")
    assert q["error"] == "access_denied" and "code" not in q

    server.auto_approve = True
    server.send_iss = True
    _verifier, challenge = _pkce()
    params = {"response_type": "code", "client_id": "basic-client", "redirect_uri": REDIRECT, "state": "s1",
              "code_challenge": challenge, "code_challenge_method": "S256", "unknown_param": "x"}
    r = requests.get(server.authorize_url, params=params, allow_redirects=False, timeout=5)
    assert r.status_code == 302
    q = _query(r.headers["Location"])
    assert q["code"] and q["state"] == "s1" and q["iss"] == server.issuer == server.url

    server.auto_approve, server.auto_deny = False, True
    r = requests.get(server.authorize_url, params={"response_type": "code", "client_id": "basic-client",
                                                   "redirect_uri": REDIRECT, "state": "s2"},
                     allow_redirects=False, timeout=5)
    q = _query(r.headers["Location"])
    assert q["error"] == "access_denied" and q["iss"] == server.issuer

    # a redirect_uri that is not registered is never redirected to
    r = requests.get(server.authorize_url, params={"response_type": "code", "client_id": "basic-client",
                                                   "redirect_uri": "http://127.0.0.1:9/evil"},
                     allow_redirects=False, timeout=5)
    assert r.status_code == 400


def test_require_pkce(server):
    server.require_pkce = True
    server.auto_approve = True
    r = requests.get(server.authorize_url, params={"response_type": "code", "client_id": "basic-client",
                                                   "redirect_uri": REDIRECT, "state": "s"},
                     allow_redirects=False, timeout=5)
    assert _query(r.headers["Location"])["error"] == "invalid_request"


def test_revocation(server):
    tok = _full_flow(server)
    data = {"token": tok["access_token"], "token_type_hint": "access_token"}
    r = requests.post(server.revoke_url, data=data, auth=("basic-client", "basic-secret"), timeout=5)
    assert r.status_code == 200
    assert not server.token_is_active(tok["access_token"])
    assert server.refresh_token_is_active(tok["refresh_token"])
    r = requests.post(server.revoke_url, data={"token": tok["refresh_token"]},
                      auth=("basic-client", "basic-secret"), timeout=5)
    assert r.status_code == 200
    assert _refresh(server, tok["refresh_token"]).json()["error"] == "invalid_grant"
    assert [rv["found"] for rv in server.revocations] == [True, True]
    assert server.revocations[0]["auth_method"] == "client_secret_basic"


def test_issuer_path():
    with OAuthTestServer(issuer_path="/realms/acme") as srv:
        srv.add_client("c", "s", [REDIRECT])
        srv.auto_approve = True
        srv.send_iss = True
        assert srv.authorize_url == srv.url + "/realms/acme/authorize"
        params = {"response_type": "code", "client_id": "c", "redirect_uri": REDIRECT}
        r = requests.get(srv.authorize_url, params=params, allow_redirects=False, timeout=5)
        assert _query(r.headers["Location"])["iss"] == srv.url + "/realms/acme"
        meta = requests.get(srv.metadata_url, timeout=5).json()
        assert meta["issuer"] == srv.issuer and meta["token_endpoint"] == srv.token_url

"""Attacks on connect tokens (RFC 8725): forged algorithms, keys, headers and claims are all 401."""
import base64
import datetime
import hashlib
import hmac
import json
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from connect_service.app import create_app
from connect_service.testing import TEST_SECRET_KEY, make_config
from connect_service.tokens import (InvalidToken, LIFETIME, mint_connect_token, signing_kid,
                                    verify_connect_token)

ISSUER = "http://connect.test"
OLD_KEY = "old-signing-key-" + "o" * 32
NEW_KEY = "new-signing-key-" + "n" * 32


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def forge(header: dict, claims: dict, key: str = TEST_SECRET_KEY, digest=hashlib.sha256, signature=None) -> str:
    """Build a JWT by hand, so that nothing in a JWT library "fixes" the attack."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if signature is None:
        signature = b64(hmac.new(key.encode(), signing_input.encode(), digest).digest())
    return f"{signing_input}.{signature}"


def now() -> int:
    return int(datetime.datetime.now(datetime.timezone.utc).timestamp())


def good_claims(app_id: str = "app-1", **changes) -> dict:
    t = now()
    claims = {"iss": ISSUER, "aud": "connect", "sub": "user-1", "app": app_id, "iat": t, "exp": t + 3600,
              "jti": uuid.uuid4().hex}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not DROP}


DROP = object()


def good_header(key: str = TEST_SECRET_KEY, **changes) -> dict:
    header = {"alg": "HS256", "typ": "JWT", "kid": signing_kid(key)}
    header.update(changes)
    return {k: v for k, v in header.items() if v is not DROP}


def verify(token: str, secret: str = TEST_SECRET_KEY, fallbacks=()):
    return verify_connect_token(token, secret, list(fallbacks), ISSUER)


# --- the forging helper itself produces accepted tokens --------------------------------------

def test_hand_forged_baseline_is_accepted():
    identity = verify(forge(good_header(), good_claims()))
    assert (identity.user_id, identity.app_id) == ("user-1", "app-1")


def test_minted_token_shape():
    token, expires = mint_connect_token(TEST_SECRET_KEY, ISSUER, "app-1", "user-1")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256" and header["kid"] == signing_kid(TEST_SECRET_KEY)
    claims = jwt.decode(token, TEST_SECRET_KEY.encode(), algorithms=["HS256"], audience="connect")
    assert set(claims) == {"iss", "aud", "sub", "app", "iat", "iat_us", "exp", "jti"}
    assert claims["iat_us"] // 1_000_000 == claims["iat"]  # the issue time to the microsecond (revocation)
    assert claims["exp"] - claims["iat"] == LIFETIME.total_seconds() == 24 * 3600
    assert claims["iss"] == ISSUER and claims["aud"] == "connect"
    # the HMAC key is the UTF-8 bytes of the setting (SPEC section 3)
    assert jwt.decode(token, TEST_SECRET_KEY.encode("utf-8"), algorithms=["HS256"], audience="connect")
    assert int(expires.timestamp()) == claims["exp"]


def test_unicode_secret_key_is_utf8_bytes():
    secret = "ключ-подписи-" + "é" * 40
    token, _ = mint_connect_token(secret, ISSUER, "app-1", "user-1")
    jwt.decode(token, secret.encode("utf-8"), algorithms=["HS256"], audience="connect")
    assert verify(token, secret).user_id == "user-1"


# --- algorithm attacks -------------------------------------------------------------------------

def test_alg_none_is_rejected():
    for alg in ("none", "None", "NONE", "nOnE"):
        token = forge(good_header(alg=alg), good_claims(), signature="")
        with pytest.raises(InvalidToken):
            verify(token)
        # even with a "signature" present
        with pytest.raises(InvalidToken):
            verify(forge(good_header(alg=alg), good_claims()))


def test_missing_alg_is_rejected():
    with pytest.raises(InvalidToken):
        verify(forge(good_header(alg=DROP), good_claims()))


@pytest.mark.parametrize("alg,digest", [("HS512", hashlib.sha512), ("HS384", hashlib.sha384)])
def test_other_hmac_algorithms_are_rejected(alg, digest):
    with pytest.raises(InvalidToken):
        verify(forge(good_header(alg=alg), good_claims(), digest=digest))


def test_rs256_is_rejected():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(good_claims(), private, algorithm="RS256", headers={"kid": signing_kid(TEST_SECRET_KEY)})
    with pytest.raises(InvalidToken):
        verify(token)


def test_hs256_header_with_a_hs512_signature_is_rejected():
    # alg says HS256 but the signature was made with another hash: must not verify
    with pytest.raises(InvalidToken):
        verify(forge(good_header(), good_claims(), digest=hashlib.sha512))


def test_wrong_signature_and_tampered_payload_are_rejected():
    token = forge(good_header(), good_claims())
    head, payload, sig = token.split(".")
    with pytest.raises(InvalidToken):
        verify(f"{head}.{payload}.{sig[:-2]}AA")
    evil = b64(json.dumps(good_claims(sub="admin")).encode())
    with pytest.raises(InvalidToken):
        verify(f"{head}.{evil}.{sig}")


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c", "....", "e30.e30.", "Bearer x.y.z",
                                   b64(b"[1]") + ".e30.x", b64(b'{"alg":"HS256","kid":[1]}') + ".e30.x"])
def test_garbage_is_rejected(token):
    with pytest.raises(InvalidToken):
        verify(token)


# --- keys and kid ------------------------------------------------------------------------------

def test_unknown_kid_is_rejected():
    with pytest.raises(InvalidToken, match="unknown key id"):
        verify(forge(good_header(kid="deadbeef0000"), good_claims()))


def test_missing_kid_is_rejected():
    with pytest.raises(InvalidToken):
        verify(forge(good_header(kid=DROP), good_claims()))


def test_token_signed_by_another_key_with_our_kid_is_rejected():
    with pytest.raises(InvalidToken):
        verify(forge(good_header(TEST_SECRET_KEY), good_claims(), key="attacker-key-" + "a" * 40))


def test_kid_of_a_key_we_do_not_have_is_rejected():
    attacker = "attacker-key-" + "a" * 40
    with pytest.raises(InvalidToken):
        verify(forge(good_header(attacker), good_claims(), key=attacker))


@pytest.mark.parametrize("name,value", [
    ("jku", "https://evil.example/jwks.json"),
    ("x5u", "https://evil.example/cert.pem"),
    ("jwk", {"kty": "oct", "k": b64(b"attacker")}),
    ("x5c", ["MIIB"]),
    ("crit", ["exp"]),
])
def test_key_bearing_and_crit_headers_are_rejected(name, value):
    with pytest.raises(InvalidToken):
        verify(forge(good_header(**{name: value}), good_claims()))


def test_unexpected_typ_is_rejected():
    with pytest.raises(InvalidToken):
        verify(forge(good_header(typ="at+jwt"), good_claims()))


def test_fallback_keys_verify_and_removed_keys_do_not():
    old_token, _ = mint_connect_token(OLD_KEY, ISSUER, "app-1", "user-1")
    assert verify(old_token, OLD_KEY).user_id == "user-1"
    # rotation: new key signs, old key is a fallback -> old tokens still verify
    assert verify(old_token, NEW_KEY, [OLD_KEY]).user_id == "user-1"
    new_token, _ = mint_connect_token(NEW_KEY, ISSUER, "app-1", "user-2")
    assert verify(new_token, NEW_KEY, [OLD_KEY]).user_id == "user-2"
    assert jwt.get_unverified_header(new_token)["kid"] == signing_kid(NEW_KEY)
    # after the old key is removed, its tokens fail
    with pytest.raises(InvalidToken, match="unknown key id"):
        verify(old_token, NEW_KEY, [])
    # a token of the new key does not verify on a service that only knows the old one
    with pytest.raises(InvalidToken):
        verify(new_token, OLD_KEY, [])


def test_kid_reveals_nothing_usable():
    kid = signing_kid(TEST_SECRET_KEY)
    assert TEST_SECRET_KEY not in kid and len(kid) == 12
    assert signing_kid(OLD_KEY) != signing_kid(NEW_KEY)


# --- claims ------------------------------------------------------------------------------------

@pytest.mark.parametrize("claim", ["exp", "iat", "iss", "aud", "sub", "app", "jti"])
def test_every_claim_is_required(claim):
    with pytest.raises(InvalidToken):
        verify(forge(good_header(), good_claims(**{claim: DROP})))


@pytest.mark.parametrize("changes", [
    {"sub": ""}, {"sub": 42}, {"sub": None}, {"app": ""}, {"app": 7}, {"app": ["a"]}, {"jti": ""}, {"jti": 1},
    {"iat": "2026-01-01"}, {"exp": "tomorrow"}, {"iat": True}, {"exp": 1.5e12},
    {"iat_us": "soon"}, {"iat_us": 1.5}, {"iat_us": True}, {"iat_us": 0}, {"iat_us": (now() + 1) * 1_000_000},
    {"name": 5}, {"name": ""}, {"name": "x" * 65}, {"name": ["a"]},
])
def test_claim_types_are_checked(changes):
    with pytest.raises(InvalidToken):
        verify(forge(good_header(), good_claims(**changes)))


def test_optional_claims_are_read():
    t = now()
    identity = verify(forge(good_header(), good_claims(iat=t, iat_us=t * 1_000_000 + 123_456, name="Alice")))
    assert identity.issued_at_us == t * 1_000_000 + 123_456 and identity.user_display == "Alice"
    identity = verify(forge(good_header(), good_claims(iat=t)))  # a token of the release before them
    assert identity.issued_at_us == t * 1_000_000 and identity.user_display is None


def test_lifetime_over_24h_is_rejected():
    t = now()
    with pytest.raises(InvalidToken, match="24 h"):
        verify(forge(good_header(), good_claims(iat=t, exp=t + 24 * 3600 + 60)))
    with pytest.raises(InvalidToken):
        verify(forge(good_header(), good_claims(iat=t - 10, exp=t + 10 * 365 * 24 * 3600)))
    # exactly 24 h is fine
    verify(forge(good_header(), good_claims(iat=t, exp=t + 24 * 3600)))


def test_exp_not_after_iat_is_rejected():
    t = now()
    with pytest.raises(InvalidToken):
        verify(forge(good_header(), good_claims(iat=t + 50, exp=t + 50)))


def test_expired_token_is_rejected():
    t = now() - 25 * 3600
    with pytest.raises(InvalidToken):
        verify(forge(good_header(), good_claims(iat=t, exp=t + 24 * 3600 - 120)))


def test_token_issued_in_the_future_is_rejected():
    t = now() + 3600
    with pytest.raises(InvalidToken):
        verify(forge(good_header(), good_claims(iat=t, exp=t + 3600)))


@pytest.mark.parametrize("changes", [
    {"iss": "https://evil.example"}, {"iss": ISSUER + "/"}, {"iss": ["x", ISSUER]},
    {"aud": "api"}, {"aud": ["connect", "other-service"]}, {"aud": ""},
])
def test_wrong_issuer_or_audience_is_rejected(changes):
    with pytest.raises(InvalidToken):
        verify(forge(good_header(), good_claims(**changes)))


def test_error_messages_never_repeat_the_token():
    token = forge(good_header(), good_claims(sub="secret-user"), key="x" * 40)
    with pytest.raises(InvalidToken) as info:
        verify(token)
    assert token not in str(info.value) and "secret-user" not in str(info.value)


# --- through HTTP: every rejection is the seed-shaped 401 ------------------------------------------

def bearer(token):
    return {"Authorization": f"Bearer {token}"}


HTTP_ATTACKS = {
    "alg_none": lambda app_id: forge(good_header(alg="none"), good_claims(app_id), signature=""),
    "hs512": lambda app_id: forge(good_header(alg="HS512"), good_claims(app_id), digest=hashlib.sha512),
    "unknown_kid": lambda app_id: forge(good_header(kid="0123456789ab"), good_claims(app_id)),
    "jku": lambda app_id: forge(good_header(jku="https://evil.example/jwks"), good_claims(app_id)),
    "x5u": lambda app_id: forge(good_header(x5u="https://evil.example/c.pem"), good_claims(app_id)),
    "jwk": lambda app_id: forge(good_header(jwk={"kty": "oct", "k": "QQ"}), good_claims(app_id)),
    "no_exp": lambda app_id: forge(good_header(), good_claims(app_id, exp=DROP)),
    "no_iat": lambda app_id: forge(good_header(), good_claims(app_id, iat=DROP)),
    "no_iss": lambda app_id: forge(good_header(), good_claims(app_id, iss=DROP)),
    "no_aud": lambda app_id: forge(good_header(), good_claims(app_id, aud=DROP)),
    "no_sub": lambda app_id: forge(good_header(), good_claims(app_id, sub=DROP)),
    "no_app": lambda app_id: forge(good_header(), good_claims(app_id, app=DROP)),
    "no_jti": lambda app_id: forge(good_header(), good_claims(app_id, jti=DROP)),
    "too_long": lambda app_id: forge(good_header(), good_claims(app_id, exp=now() + 48 * 3600)),
    "wrong_iss": lambda app_id: forge(good_header(), good_claims(app_id, iss="https://evil.example")),
    "wrong_aud": lambda app_id: forge(good_header(), good_claims(app_id, aud="management")),
    "expired": lambda app_id: forge(good_header(), good_claims(app_id, iat=now() - 7200, exp=now() - 3600)),
    "unknown_app": lambda app_id: forge(good_header(), good_claims(str(uuid.uuid4()))),
}


@pytest.mark.parametrize("attack", sorted(HTTP_ATTACKS))
def test_forged_tokens_get_401_over_http(connect, app_with_key, attack):
    token = HTTP_ATTACKS[attack](app_with_key["id"])
    for path in ("/v1/connect/requirements", "/v1/connect/requirements/statuses"):
        r = connect.client.get(path, headers=bearer(token))
        assert r.status_code == 401, (attack, path)
        assert r.get_json() == {"error": {"code": "unauthorized", "message": "Unauthorized"}}
    rid = connect.requirement_id(app_with_key, "helpdesk")
    r = connect.client.post(f"/v1/connect/requirements/{rid}/credentials", headers=bearer(token),
                            json={"type": "dynamiq.connections.HttpApiKey",
                                  "config": {"url": "https://x.example", "api_key": "k"}})
    assert r.status_code == 401


def test_baseline_forged_token_works_over_http(connect, app_with_key):
    # proves the attacks above fail for the reason they test, not for a broken baseline
    token = forge(good_header(), good_claims(app_with_key["id"]))
    assert connect.client.get("/v1/connect/requirements", headers=bearer(token)).status_code == 200


def test_access_key_is_401_on_end_user_endpoints(connect, app_with_key):
    r = connect.client.get("/v1/connect/requirements", headers=connect.auth)
    assert r.status_code == 401


def test_connect_token_is_401_on_management_api(connect, app_with_key):
    token = connect.token(app_with_key, "user-1")
    for path in ("/v1/apps", "/v1/access-keys"):
        assert connect.client.get(path, headers=bearer(token)).status_code == 401


def test_signing_key_rotation_across_instances(connect, app_with_key, tmp_path):
    """Old tokens keep working while the old key is a fallback, then stop when it is removed."""
    old_token = connect.token(app_with_key, "user-1")  # signed by TEST_SECRET_KEY
    shared = dict(connect.app.config["CONNECT"])
    keys = shared["encryption_keys"]
    db_url = shared["database_url"]

    def instance(secret, fallbacks):
        cfg = make_config(tmp_path, secret_key=secret, secret_key_fallbacks=fallbacks, encryption_keys=keys,
                          database_url=db_url)
        return create_app(cfg).test_client()

    rotated = instance(NEW_KEY, [TEST_SECRET_KEY])
    assert rotated.get("/v1/connect/requirements", headers=bearer(old_token)).status_code == 200
    r = rotated.post("/v1/connect/tokens", json={"user_id": "user-2"}, headers={"Host": app_with_key["hostname"]})
    assert r.status_code == 201
    new_token = r.get_json()["token"]
    assert jwt.get_unverified_header(new_token)["kid"] == signing_kid(NEW_KEY)
    assert rotated.get("/v1/connect/requirements", headers=bearer(new_token)).status_code == 200

    finished = instance(NEW_KEY, [])
    assert finished.get("/v1/connect/requirements", headers=bearer(old_token)).status_code == 401
    assert finished.get("/v1/connect/requirements", headers=bearer(new_token)).status_code == 200

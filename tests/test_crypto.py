"""Encryption at rest: AES-GCM keyring, tamper detection, binding to table/column/row."""
import base64

import pytest

from connect_service.config import ConfigError, generate_key, load_config
from connect_service.crypto import DecryptionError, Keyring, key_id, parse_keyring
from connect_service.testing import make_config

SECRET = "sk_live_TOP_SECRET_0123456789"


def b64decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64encode(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@pytest.fixture
def keys():
    return [generate_key(), generate_key()]


def test_round_trip_and_format(keys):
    ring = Keyring(keys)
    token = ring.encrypt_json({"api_key": SECRET}, "connection", "settings", "conn_1")
    prefix, kid, body = token.split(":", 2)
    assert prefix == "v1" and kid == ring.primary_kid == key_id(b64decode(keys[0]))
    assert SECRET not in token and SECRET.encode() not in b64decode(body)
    assert ring.decrypt_json(token, "connection", "settings", "conn_1") == {"api_key": SECRET}


def test_fresh_nonce_every_time(keys):
    ring = Keyring(keys)
    tokens = {ring.encrypt(b"same", "t", "c", "r") for _ in range(50)}
    assert len(tokens) == 50
    nonces = {b64decode(t.split(":", 2)[2])[:12] for t in tokens}
    assert len(nonces) == 50


def test_first_key_encrypts_every_key_decrypts(keys):
    old = Keyring([keys[1]])
    token = old.encrypt(b"x", "t", "c", "r")
    both = Keyring(keys)
    assert both.decrypt(token, "t", "c", "r") == b"x"
    assert both.needs_rotation(token)
    new_token = both.encrypt(b"x", "t", "c", "r")
    assert not both.needs_rotation(new_token)
    assert new_token.split(":")[1] == key_id(b64decode(keys[0]))
    assert both.key_ids == [key_id(b64decode(k)) for k in keys]
    # the old key alone cannot read what the new key wrote
    with pytest.raises(DecryptionError, match="not in CONNECT_ENCRYPTION_KEYS"):
        old.decrypt(new_token, "t", "c", "r")


def test_removed_key_fails_with_clear_error(keys):
    token = Keyring([keys[1]]).encrypt(b"x", "t", "c", "r")
    with pytest.raises(DecryptionError) as info:
        Keyring([keys[0]]).decrypt(token, "t", "c", "r")
    assert "CONNECT_ENCRYPTION_KEYS" in str(info.value)


@pytest.mark.parametrize("where", ["table", "column", "row"])
def test_ciphertext_is_bound_to_table_column_and_row(keys, where):
    ring = Keyring(keys)
    token = ring.encrypt_json({"api_key": SECRET}, "connection", "settings", "conn_1")
    args = {"table": ("credential", "settings", "conn_1"), "column": ("connection", "oauth_client_secret", "conn_1"),
            "row": ("connection", "settings", "conn_2")}[where]
    with pytest.raises(DecryptionError, match="authentication failed"):
        ring.decrypt(token, *args)


def test_every_tampered_byte_is_detected(keys):
    ring = Keyring(keys)
    token = ring.encrypt(SECRET.encode(), "connection", "settings", "conn_1")
    prefix, kid, body = token.split(":", 2)
    raw = b64decode(body)
    for position in range(len(raw)):
        for bit in (0x01, 0x80):
            flipped = bytearray(raw)
            flipped[position] ^= bit
            with pytest.raises(DecryptionError):
                ring.decrypt(f"{prefix}:{kid}:{b64encode(bytes(flipped))}", "connection", "settings", "conn_1")


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-1],                                   # truncated tag
    lambda t: t[: t.rindex(":") + 10],                  # truncated to less than a nonce + tag
    lambda t: t.rsplit(":", 1)[0] + ":",                # empty body
    lambda t: t + "AAAA",                               # extra bytes
    lambda t: t.replace("v1:", "v2:", 1),               # unknown version
    lambda t: "v1:" + "0" * 8 + ":" + t.split(":", 2)[2],  # unknown key id
    lambda t: t.rsplit(":", 1)[0] + ":!!!not-base64!!!",
    lambda t: "",
    lambda t: "plaintext",
    lambda t: None,
])
def test_malformed_ciphertexts_raise_never_garbage(keys, mangle):
    ring = Keyring(keys)
    token = ring.encrypt(SECRET.encode(), "t", "c", "r")
    with pytest.raises(DecryptionError) as info:
        ring.decrypt(mangle(token), "t", "c", "r")
    assert SECRET not in str(info.value)


def test_decryption_errors_never_echo_the_value(keys):
    ring = Keyring(keys)
    for value in (f"v1:{SECRET}:AAAA", f"{SECRET}:x:y", SECRET):
        with pytest.raises(DecryptionError) as info:
            ring.decrypt(value, "t", "c", "r")
        assert SECRET not in str(info.value)


@pytest.mark.parametrize("bad,message", [
    ([], "at least one key"),
    (["not base64 at all!!"], "key #1"),
    ([base64.urlsafe_b64encode(b"short").decode()], "32 bytes"),
    ([generate_key(), base64.urlsafe_b64encode(b"x" * 31).decode()], "key #2"),
])
def test_parse_keyring_rejects_bad_keys(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_keyring(bad)


def test_config_names_the_setting_and_never_the_key(tmp_path):
    bad = base64.urlsafe_b64encode(b"y" * 20).decode()
    with pytest.raises(ConfigError) as info:
        load_config(make_config(tmp_path, encryption_keys=[bad]), environ={})
    assert str(info.value).startswith("CONNECT_ENCRYPTION_KEYS:")
    assert bad not in str(info.value) and "\n" not in str(info.value)


def test_env_var_keyring_is_ordered(tmp_path):
    first, second = generate_key(), generate_key()
    cfg = make_config(tmp_path)
    cfg.pop("encryption_keys")
    loaded = load_config(cfg, environ={"CONNECT_ENCRYPTION_KEYS": f"{first}, {second}"})
    assert loaded["encryption_keys"] == [first, second]
    assert Keyring(loaded["encryption_keys"]).primary_kid == key_id(b64decode(first))


def test_swapped_rows_fail_in_the_database(connect, app_with_key):
    """Copying one connection's ciphertext into another row (or column) does not decrypt there."""
    from connect_service.connections import read_settings
    from connect_service.db import database
    from connect_service.models import Connection

    rid = connect.requirement_id(app_with_key, "helpdesk")
    for user, key in (("alice", "alice-key-111"), ("bob", "bob-key-222")):
        r = connect.submit_credentials(connect.token(app_with_key, user), rid, "dynamiq.connections.HttpApiKey",
                                       {"url": "https://helpdesk.example.com", "api_key": key})
        assert r.status_code == 201
    with connect.app.app_context(), database.connection_context():
        alice = Connection.get(Connection.customer_id == "alice")
        bob = Connection.get(Connection.customer_id == "bob")
        assert read_settings(alice)["api_key"] == "alice-key-111"
        a_ct, b_ct = alice.settings_encrypted, bob.settings_encrypted
        Connection.update(settings_encrypted=b_ct).where(Connection.id == alice.id).execute()
        Connection.update(settings_encrypted=a_ct).where(Connection.id == bob.id).execute()
        for conn_id in (alice.id, bob.id):
            with pytest.raises(DecryptionError):
                read_settings(Connection.get_by_id(conn_id))
        # decrypting under the right row still works: the ciphertexts themselves are intact
        ring = connect.app.extensions["connect_keyring"]
        assert ring.decrypt_json(a_ct, "connection", "settings", alice.id)["api_key"] == "alice-key-111"

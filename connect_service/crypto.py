"""Encryption at rest: AES-256-GCM with an ordered keyring.

A ciphertext is ``v1:<kid>:<base64url(nonce || ciphertext+tag)>``. ``kid`` is a
short hash of the key, so the keyring finds the key that wrote a value; the
first key in ``CONNECT_ENCRYPTION_KEYS`` encrypts, every key decrypts. The
associated data is ``<table>.<column>.<row id>``: a ciphertext copied into
another row or column fails authentication instead of decrypting.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "v1"


class DecryptionError(Exception):
    """A ciphertext could not be decrypted: unknown key id, tampered or moved."""


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"connect-service-kid" + key).hexdigest()[:8]


def parse_keyring(keys: list[str]) -> list[tuple[str, bytes]]:
    """Parse base64url keys into ``[(kid, key)]``; raise ValueError naming the problem."""
    if not keys:
        raise ValueError("at least one key is required (generate one with `connect-service generate-key`)")
    ring = []
    for index, text in enumerate(keys):
        try:
            key = _b64decode(text.strip())
        except (ValueError, TypeError):
            raise ValueError(f"key #{index + 1} is not base64url") from None
        if len(key) != 32:
            raise ValueError(f"key #{index + 1} must decode to 32 bytes, got {len(key)}")
        ring.append((key_id(key), key))
    return ring


class Keyring:
    """Encrypts with the first key and decrypts with whichever key wrote a value."""

    def __init__(self, keys: list[str]):
        ring = parse_keyring(keys)
        self.primary_kid = ring[0][0]
        self._keys = dict(ring)
        self._primary = AESGCM(ring[0][1])

    @staticmethod
    def aad(table: str, column: str, row_id: str) -> bytes:
        """The associated data binding a ciphertext to one table, column and row."""
        return f"{table}.{column}.{row_id}".encode()

    def encrypt(self, plaintext: bytes, table: str, column: str, row_id: str) -> str:
        """Encrypt with the primary key and a fresh random 96-bit nonce, bound to (table, column, row id)."""
        nonce = os.urandom(12)
        sealed = self._primary.encrypt(nonce, plaintext, self.aad(table, column, row_id))
        return f"{PREFIX}:{self.primary_kid}:{_b64encode(nonce + sealed)}"

    def decrypt(self, token: str, table: str, column: str, row_id: str) -> bytes:
        """Decrypt a value written by any key of the ring for exactly this (table, column, row id).

        Raises :class:`DecryptionError` (whose message names the column and key id, never data)
        for an unknown key id, a malformed value, or a value tampered with or moved from elsewhere.
        """
        try:
            prefix, kid, body = token.split(":", 2)
        except (ValueError, AttributeError):
            raise DecryptionError(f"{table}.{column}: not a ciphertext") from None
        if prefix != PREFIX:
            raise DecryptionError(f"{table}.{column}: unknown ciphertext version")
        key = self._keys.get(kid)
        if key is None:
            shown = kid if len(kid) == 8 and all(c in "0123456789abcdef" for c in kid) else "<malformed>"
            raise DecryptionError(
                f"{table}.{column}: written with key {shown}, which is not in CONNECT_ENCRYPTION_KEYS")
        try:
            raw = _b64decode(body)
            return AESGCM(key).decrypt(raw[:12], raw[12:], self.aad(table, column, row_id))
        except (InvalidTag, ValueError):
            raise DecryptionError(
                f"{table}.{column}: authentication failed (tampered, or moved from another row)") from None

    @property
    def key_ids(self) -> list[str]:
        """The key ids of the keyring (the first one encrypts)."""
        return list(self._keys)

    def has_key(self, kid: str) -> bool:
        """Whether a value written with key id ``kid`` can be decrypted by this keyring."""
        return kid in self._keys

    def needs_rotation(self, token: str) -> bool:
        """True when ``token`` was written by a key other than the primary one."""
        return not token.startswith(f"{PREFIX}:{self.primary_kid}:")

    def encrypt_json(self, value: Any, table: str, column: str, row_id: str) -> str:
        """:meth:`encrypt` for a JSON-serialisable value."""
        return self.encrypt(json.dumps(value, separators=(",", ":")).encode(), table, column, row_id)

    def decrypt_json(self, token: str, table: str, column: str, row_id: str) -> Any:
        """:meth:`decrypt` and parse the JSON value written by :meth:`encrypt_json`."""
        return json.loads(self.decrypt(token, table, column, row_id))

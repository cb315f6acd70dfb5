"""Access Keys (``ak_…``) of an organization: create (plaintext shown once), look up, revoke.

Only a SHA-256 of a key is stored (``tokens.generate_access_key``); the
management API authenticates with them (``auth.require_access_key``).
"""
from __future__ import annotations

from typing import Any

from . import audit, errors
from .db import write_transaction
from .models import AccessKey, Organization, utcnow
from .timestamps import iso
from .tokens import generate_access_key


def create_access_key(org: Organization, name: str = "") -> tuple[AccessKey, str]:
    """A new key of ``org`` and its plaintext (which is not stored: show it now or never)."""
    plaintext, prefix, digest = generate_access_key()
    with write_transaction():
        key = AccessKey.create(org=org, name=name, prefix=prefix, key_hash=digest)
        audit.record("access_key.created", org_id=key.org_id, target_type="access_key", target_id=key.id)
    return key, plaintext


def key_view(key: AccessKey, plaintext: str | None = None) -> dict[str, Any]:
    out = {"id": key.id, "name": key.name, "prefix": key.prefix, "created_at": iso(key.created_at),
           "last_used_at": iso(key.last_used_at), "revoked_at": iso(key.revoked_at)}
    if plaintext:
        out["key"] = plaintext
    return out


def revoke(org_id: str, key_id: str) -> AccessKey:
    """Revoke a key of the organization (idempotent); another org's key is a 404."""
    key = AccessKey.get_or_none(AccessKey.id == key_id, AccessKey.org == org_id)
    if key is None:
        raise errors.NotFound()
    if key.revoked_at is None:
        with write_transaction():
            key.revoked_at = utcnow()
            key.save()
            audit.record("access_key.revoked", org_id=key.org_id, target_type="access_key", target_id=key.id)
    return key

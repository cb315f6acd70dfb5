"""The webhook URL an action-account platform calls back: signed, expiring, opaque.

The webhook URL is ``{public_url}/v1/connect/webhooks/{connector}/<signed value>``:
a ``signing`` value (salt ``connect-webhook``, keys ``secret_key`` and its
fallbacks) valid for :data:`WEBHOOK_MAX_AGE_SECONDS`, whose payload is an
opaque reference: the claims (app, end user, requirement) encrypted with the
keyring (associated data ``webhook.ref.<connector>``). The platform that
receives the URL learns neither the app id nor the end user's id (often an
email address), and a reference minted for one connector does not decrypt as
another's. The URL goes only to the platform, never to the browser, and the
access log replaces the value with ``<signed>``. ``accounts.py`` hands the URL
to the type and resolves it when the platform calls (and re-exports these names).
"""
from __future__ import annotations

from .crypto import DecryptionError
from .extensions import keyring, settings
from .signing import InvalidSignature, sign, unsign

WEBHOOK_SALT = "connect-webhook"
#: associated data of the encrypted webhook reference: ("webhook", "ref", connector name)
WEBHOOK_TABLE, WEBHOOK_COLUMN = "webhook", "ref"
#: platform link tokens live 4 hours; an hour more covers the platform's delivery retries
WEBHOOK_MAX_AGE_SECONDS = 5 * 3600


def sign_webhook_value(connector: str, app_id: str, user_id: str, requirement_id: str) -> str:
    """The signed, expiring, opaque last path segment of a webhook URL (see the module docstring)."""
    ref = keyring().encrypt_json({"a": app_id, "u": user_id, "r": requirement_id}, WEBHOOK_TABLE, WEBHOOK_COLUMN,
                                 connector)
    return sign(WEBHOOK_SALT, ref)


def verify_webhook_value(connector: str, value: str) -> dict[str, str] | None:
    """The claims (``a`` app, ``u`` user, ``r`` requirement) of a webhook value for ``connector``.

    None when the value is forged, expired, not an encrypted reference, or
    minted for another connector.
    """
    try:
        ref = unsign(WEBHOOK_SALT, value, WEBHOOK_MAX_AGE_SECONDS)
    except InvalidSignature:
        return None
    if not isinstance(ref, str):
        return None
    try:
        claims = keyring().decrypt_json(ref, WEBHOOK_TABLE, WEBHOOK_COLUMN, connector)
    except (DecryptionError, ValueError):
        return None
    if not isinstance(claims, dict) or not all(isinstance(claims.get(k), str) for k in ("a", "u", "r")):
        return None
    return claims


def webhook_url(connector: str, app_id: str, user_id: str, requirement_id: str) -> str:
    """This service's webhook URL for one (app, user, requirement), to hand to the connector's platform."""
    return (f"{settings()['public_url']}/v1/connect/webhooks/{connector}/"
            f"{sign_webhook_value(connector, app_id, user_id, requirement_id)}")

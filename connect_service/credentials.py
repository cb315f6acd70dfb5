"""Credentials: OAuth client registrations (seed 003), validated against the org and the plugin registry.

"Credential" means the OAuth client registration only; what an end user types
into an API-key form is a connection's *config* (``requirements.submit_config``).

Seed 003's team maps to our app: ``team_id`` → ``app_id``; ``read_access``
``TEAM``/``GLOBAL``/``SPECIFIC_TEAMS`` → ``APP``/``ORGANIZATION``/``SPECIFIC_APPS``
with ``shared_team_slugs`` → ``shared_app_slugs`` (both spellings accepted,
ours answered). The client secret is write-only and stored encrypted. What a body may
hold and every check of it live in ``credential_validation.py``; this module
creates, updates and deletes (and re-exports the schemas).
"""
from __future__ import annotations

from typing import Any

from . import audit, errors, oauth
from .connections import mark_error
from .credential_validation import (GRANTS, READ_ACCESS, CredentialPatchSchema, CredentialSchema, HostPattern,
                                    apply, merge_aliases, slug_of)
from .db import write_transaction
from .hosts import is_host_allowed, url_host
from .lifecycle import delete_connection
from .models import AccessKey, Connection, Credential, Organization, new_id, utcnow

# re-exported: the API and older importers take the schemas from here
__all__ = ["GRANTS", "READ_ACCESS", "TOKEN_FIELDS", "CredentialPatchSchema", "CredentialSchema", "HostPattern",
           "check_host", "create", "delete", "get_for_org", "org_level_connection", "slug_of", "test_credential_of",
           "update"]

#: fields whose change means a client_credentials token must be fetched again
TOKEN_FIELDS = {"oauth_token_url", "oauth_client_id", "oauth_client_secret", "oauth_scope",
                "token_endpoint_auth_method", "connector_name", "oauth_grant_type", "settings"}


def delete(cred: Credential) -> None:
    """Delete a credential after revoking and removing its own org-level connection.

    End-user OAuth connections it served keep their rows but move to
    ``error`` (their requirement is pending again, so the end user
    reconnects): without the client registration they can never refresh.
    """
    conn = org_level_connection(cred)
    if conn is not None:
        delete_connection(conn)
    for served in Connection.select().where(Connection.credential == cred.id, Connection.status != "error"):
        mark_error(served, "its OAuth client registration (credential) was deleted; reconnect")
    with write_transaction():
        cred.delete_instance()
        audit.record("credential.deleted", org_id=cred.org_id, target_type="credential", target_id=cred.id,
                     app_id=cred.app_id)


def org_level_connection(credential: Credential) -> Connection | None:
    """The org-level connection a credential owns (client_credentials token or its redirect_url flow)."""
    return (Connection.select().where(Connection.credential == credential.id, Connection.app.is_null(),
                                      Connection.customer_id.is_null(), Connection.requirement_id.is_null())
            .order_by(Connection.created_at).first())


def check_host(credential_id: str | None, url: str) -> dict[str, Any]:
    """Whether a connection whose credential is ``credential_id`` may send its secrets to ``url``.

    The same normalisation and matching as the guarded outbound client; no
    credential, or one without ``allowed_hosts``, means unrestricted.
    """
    url = url.strip()
    try:
        host = url_host(url)
    except ValueError as exc:
        raise errors.BadRequest({"url": f"must be an http(s) URL that names its host plainly: {exc}"}) from None
    cred = Credential.get_or_none(Credential.id == credential_id) if credential_id else None
    patterns = list(cred.allowed_hosts or []) if cred else []
    return {"allowed": is_host_allowed(patterns, url), "host": host, "allowed_hosts": patterns}


def get_for_org(org_id: str, credential_id: str) -> Credential:
    """A credential of the organization, else 404 (another org's is not revealed)."""
    cred = Credential.get_or_none(Credential.id == credential_id, Credential.org == org_id)
    if cred is None:
        raise errors.NotFound()
    return cred


def create(org: Organization, data: dict[str, Any], owner: AccessKey | None = None) -> Credential:
    """Create a credential from :class:`CredentialSchema` data (400 naming each bad field).

    ``owner`` is the Access Key that creates it (seed 003's ``owner``). A
    client_credentials registration whose token the service keeps fetches it
    first, so one the provider refuses is never saved.
    """
    cred = Credential(id=new_id("ccfg"), org=org.id, mode="OAUTH", oauth_grant_type="authorization_code",
                      owner_key=owner.id if owner is not None else None)
    apply(cred, merge_aliases(data), creating=True)
    token = oauth.fetch_client_credentials(cred) if oauth.owns_org_token(cred) else None
    _save(cred, token, created=True)
    return cred


def update(cred: Credential, data: dict[str, Any]) -> Credential:
    """Apply a PATCH (any subset of :class:`CredentialSchema`); the token is fetched again if its inputs changed."""
    data = merge_aliases(data)
    apply(cred, data, creating=False)
    changed = {k if k != "oauth_token_endpoint_auth_method" else "token_endpoint_auth_method" for k in data}
    token = None
    if oauth.owns_org_token(cred) and (changed & TOKEN_FIELDS or org_level_connection(cred) is None):
        token = oauth.fetch_client_credentials(cred)
    _save(cred, token, created=False)
    return cred


def _save(cred: Credential, token: dict[str, Any] | None, *, created: bool) -> None:
    cred.updated_at = utcnow()
    if created:
        cred.created_at = cred.updated_at
    with write_transaction():
        cred.save(force_insert=created)
        audit.record("credential.created" if created else "credential.updated", org_id=cred.org_id,
                     target_type="credential", target_id=cred.id, app_id=cred.app_id)
    if token is not None:
        oauth.store_org_token(cred, token)


def test_credential_of(cred: Credential) -> Credential | None:
    """The test credential of a live credential (seed 003), or None."""
    return Credential.get_or_none(Credential.live_credential == cred.id)

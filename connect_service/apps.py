"""Apps: the schema an app is written with, creation, update, deletion and its public view.

Shared by ``api/apps.py`` (the HTTP face) and ``connect-service apps deploy``
(``deploy_file.py``).
"""
from __future__ import annotations

import ipaddress
import re
import secrets
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from . import credentials, errors, tokens
from .db import compiled_sql, fetch_models
from .extensions import keyring, settings
from .fields import DNS_NAME, HTTP_URL, FullMatch, NonBlank
from .hosts import management_hosts, url_host
from .lifecycle import delete_connection
from .models import App, Connection, Credential, Organization, utcnow
from .timestamps import iso

HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
SLUG_ERROR = "must be lowercase letters, digits and dashes"
USER_VERIFICATION = ("none", "required")
USER_VERIFICATION_HELP = ('"required": minting a connect token needs user_id_signature, the hex HMAC-SHA256 '
                          "of user_id under the app's user_verification_secret (shown once)")
#: OpenAPI: what validate_return_url accepts (format uri, the http(s) URL pattern)
RETURN_URL_DOC = {"format": "uri", "pattern": HTTP_URL}


def validate_return_url(value: str) -> None:
    try:  # http(s) only; no user-info, whitespace, control characters, backslashes or bad ports
        url_host(value)
    except ValueError:
        raise ma.ValidationError("must be an absolute http(s) URL") from None


class HostnameField(NonBlank):
    """An app hostname: lowercase DNS name, not an IP address and not the service's own host."""

    # documented: DNS labels whose last one starts with a letter (so never an IP address)
    openapi = {"minLength": 1, "maxLength": 253, "pattern": f"^{DNS_NAME}$"}

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs).strip().lower().rstrip(".")
        if not HOSTNAME_RE.match(text):
            raise ma.ValidationError("must be a hostname such as helpdesk.example.com (no scheme, port or path)")
        try:
            ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            raise ma.ValidationError("must be a DNS name, not an IP address")
        if text in management_hosts(settings()):
            raise ma.ValidationError("is the service's own host (public_url, localhost or management_hosts), "
                                     "which serves the management API")
        return text


class AppCreateSchema(ma.Schema):
    name = NonBlank(required=True, validate=validate.Length(max=200))
    hostname = HostnameField(required=True)
    visibility = fields.String(load_default="private", validate=validate.OneOf(["public", "private"]))
    slug = fields.String(validate=FullMatch(SLUG_RE, error=SLUG_ERROR))
    return_urls = fields.List(fields.String(validate=validate_return_url, metadata=RETURN_URL_DOC),
                              load_default=list)
    frame_ancestors = fields.List(fields.String(validate=validate_return_url, metadata=RETURN_URL_DOC),
                                  load_default=list, metadata={"description": "origins allowed to frame the hosted page"})
    user_verification = fields.String(load_default="none", validate=validate.OneOf(USER_VERIFICATION),
                                      metadata={"description": USER_VERIFICATION_HELP})


class AppPatchSchema(ma.Schema):
    name = NonBlank(validate=validate.Length(max=200))
    hostname = HostnameField()
    visibility = fields.String(validate=validate.OneOf(["public", "private"]))
    slug = fields.String(validate=FullMatch(SLUG_RE, error=SLUG_ERROR))
    return_urls = fields.List(fields.String(validate=validate_return_url, metadata=RETURN_URL_DOC))
    frame_ancestors = fields.List(fields.String(validate=validate_return_url, metadata=RETURN_URL_DOC))
    user_verification = fields.String(validate=validate.OneOf(USER_VERIFICATION),
                                      metadata={"description": USER_VERIFICATION_HELP})


def app_view(app: App) -> dict[str, Any]:
    """The app as the API shows it; ``user_verification_secret`` only right after it was generated."""
    view = {
        "id": app.id, "name": app.name, "slug": app.slug, "hostname": app.hostname,
        "visibility": app.visibility, "return_urls": app.return_urls or [],
        "frame_ancestors": app.frame_ancestors or [], "deployed_version": app.deployed_version,
        "user_verification": app.user_verification,
        "created_at": iso(app.created_at), "updated_at": iso(app.updated_at),
    }
    shown_once = getattr(app, "new_user_verification_secret", None)
    if shown_once:
        view["user_verification_secret"] = shown_once
    return view


def _new_user_verification_secret(app: App) -> None:
    """Generate the app's secret, store it encrypted, and keep the plaintext on this row object only
    (``new_user_verification_secret``) so the answer to this request shows it once."""
    secret = "uvs_" + secrets.token_urlsafe(32)
    app.user_verification_secret_encrypted = keyring().encrypt_json(secret, "app", "user_verification_secret", app.id)
    app.new_user_verification_secret = secret


def get_for_org(org_id: str, app_id: str) -> App:
    """An app of the organization, else 404 (another org's app is not revealed)."""
    app = App.get_or_none(App.id == app_id, App.org == org_id)
    if app is None:
        raise errors.NotFound()
    return app


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60]
    return slug or "app"


def _check_unique(org_id: str, hostname: str | None, slug: str | None, exclude: str | None = None) -> None:
    """409 naming the field: hostnames are unique service-wide (they route requests), slugs per org."""
    details = {}
    if hostname:
        q = App.select().where(App.hostname == hostname)
        if exclude:
            q = q.where(App.id != exclude)
        if q.exists():
            details["hostname"] = "is already used by another app"
    if slug:
        q = App.select().where(App.org == org_id, App.slug == slug)
        if exclude:
            q = q.where(App.id != exclude)
        if q.exists():
            details["slug"] = "is already used by another app of this organization"
    if details:
        raise errors.Conflict(details)


def create(org: Organization, data: dict[str, Any]) -> App:
    """Create an app from :class:`AppCreateSchema` data; without a slug one is derived from the name."""
    _check_unique(org.id, data["hostname"], data.get("slug"))
    slug = data.get("slug") or slugify(data["name"])
    if not data.get("slug"):
        base, n = slug, 2
        while App.select().where(App.org == org.id, App.slug == slug).exists():
            slug, n = f"{base}-{n}", n + 1
    app = App(org=org, name=data["name"], slug=slug, hostname=data["hostname"],
              visibility=data.get("visibility", "private"), return_urls=data.get("return_urls", []),
              frame_ancestors=data.get("frame_ancestors", []),
              user_verification=data.get("user_verification", "none"))
    if app.user_verification == "required":
        _new_user_verification_secret(app)
    app.save(force_insert=True)
    return app


def update(app: App, data: dict[str, Any]) -> App:
    """Apply :class:`AppPatchSchema` data (any subset) to an app and save it.

    Public → private refuses every connect token issued so far (the app's ``tokens_valid_after``);
    switching ``user_verification`` on generates its secret (shown once), switching it off drops it.
    """
    _check_unique(app.org_id, data.get("hostname"), data.get("slug"), exclude=app.id)
    now = utcnow()
    if app.visibility == "public" and data.get("visibility") == "private":
        tokens.revoke_app_tokens(app)
    if data.get("user_verification") == "required" and not app.user_verification_secret_encrypted:
        _new_user_verification_secret(app)
    elif data.get("user_verification") == "none":
        app.user_verification_secret_encrypted = None
    for key, value in data.items():
        setattr(app, key, value)
    app.updated_at = now
    app.save()
    return app


def rotate_user_verification_secret(app: App) -> App:
    """A new ``user_verification_secret`` (shown once); signatures made with the old one stop working."""
    if app.user_verification != "required":
        raise errors.Conflict({"user_verification": 'is "none": set it to "required" first'})
    _new_user_verification_secret(app)
    app.updated_at = utcnow()
    app.save()
    return app


def delete(app: App) -> None:
    """Delete an app: its connections (revoked at the provider where possible), own credentials, versions."""
    for conn in Connection.select().where(Connection.app == app.id):
        delete_connection(conn)
    for cred in Credential.select().where(Credential.app == app.id, Credential.read_access == "APP"):
        credentials.delete(cred)
    # credentials that merely named this app as their team stay, organization-owned
    Credential.update(app=None).where(Credential.app == app.id).execute()
    app.delete_instance(recursive=True)


def app_by_hostname(hostname: str) -> App | None:
    """The app serving ``hostname`` (host routing, every request on an app host), or None.

    One indexed query whose SQL is built once per worker.
    """
    sql = compiled_sql("apps.by_hostname", lambda: App.select().where(App.hostname == ""))
    found = fetch_models(sql, (hostname,), App)
    return found[0][0] if found else None

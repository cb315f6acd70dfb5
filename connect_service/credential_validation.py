"""What a credential body may hold, and how it is judged against the org and the plugin registry.

The request schemas of ``/v1/credentials`` (POST and PATCH), seed 003's spellings
mapped to ours (:func:`merge_aliases`), and :func:`apply`: every check of a
body, copied onto the ``Credential`` row (not saved) or refused with a 400
naming each bad field. ``credentials.py`` creates, updates and deletes; it
re-exports the schemas.
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import marshmallow as ma
from marshmallow import fields, validate

from . import errors, oauth
from .extensions import registry, settings
from .fields import DNS_NAME, HTTP_URL, HTTPS_URL_TEMPLATE, NonBlank
from .hosts import outbound_url_problem, validate_allowed_host_pattern
from .models import App, Credential

READ_ACCESS = {"TEAM": "APP", "GLOBAL": "ORGANIZATION", "SPECIFIC_TEAMS": "SPECIFIC_APPS",
               "APP": "APP", "ORGANIZATION": "ORGANIZATION", "SPECIFIC_APPS": "SPECIFIC_APPS"}
GRANTS = ("authorization_code", "client_credentials")


class HostPattern(fields.String):
    # documented: a host name, or ``*.`` and one (whether a wildcard covers a public suffix is the list's call)
    openapi = {"minLength": 1, "maxLength": 253, "pattern": rf"^(\*\.)?{DNS_NAME}$"}

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return validate_allowed_host_pattern(text)
        except ValueError as exc:
            raise ma.ValidationError(str(exc)) from None


class CredentialSchema(ma.Schema):
    """Request body of POST (all of it) and PATCH (any subset)."""

    name = NonBlank(required=True, validate=validate.Length(max=200))
    mode = fields.String(validate=validate.OneOf(["OAUTH"]))
    connector_name = NonBlank(metadata={"description": "provider connector (google, github, …; oauth2 = custom)"})
    oauth_url = fields.String(allow_none=True, metadata={
        "description": "authorization URL (default: the plugin's)", "format": "uri", "pattern": HTTPS_URL_TEMPLATE})
    oauth_token_url = fields.String(allow_none=True, metadata={"format": "uri", "pattern": HTTPS_URL_TEMPLATE})
    oauth_client_id = NonBlank()
    oauth_client_secret = fields.String(allow_none=True, load_only=True)
    oauth_scope = fields.String(allow_none=True)
    oauth_grant_type = fields.String(validate=validate.OneOf(GRANTS))
    oauthPkceCodeChallengeMethod = fields.String(allow_none=True, validate=validate.OneOf(["S256", "plain"]))
    oauth_token_endpoint_auth_method = fields.String(allow_none=True, validate=validate.OneOf(oauth.AUTH_METHODS))
    oauth_issuer = fields.String(allow_none=True, metadata={"format": "uri", "pattern": HTTP_URL})
    app_id = fields.String(allow_none=True)
    team_id = fields.String(allow_none=True, metadata={"description": "seed 003 spelling of app_id"})
    read_access = fields.String(validate=validate.OneOf(list(READ_ACCESS)))
    shared_app_slugs = fields.List(fields.String())
    shared_team_slugs = fields.List(fields.String(), metadata={"description": "seed 003 spelling"})
    description = fields.String(allow_none=True, validate=validate.Length(max=2000))
    metadata = fields.Dict(allow_none=True)
    allowed_hosts = fields.List(HostPattern())
    settings = fields.Dict(allow_none=True, metadata={"description": "connector-specific, validated by its plugin"})
    folder_id = fields.String(allow_none=True, validate=validate.Length(max=200),
                              metadata={"description": "a folder label, stored and answered as given"})
    live_credential_id = fields.String(allow_none=True, metadata={
        "description": "makes this the test credential of that credential of your organization (seed 003): "
                       "the live one then answers test_credential_enabled true and its test_credential"})


class CredentialPatchSchema(CredentialSchema):
    """PATCH body: any subset of :class:`CredentialSchema`."""

    def __init__(self, **kwargs):
        super().__init__(partial=True, **kwargs)


def slug_of(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:100] or "credential"

def _check_url(value: str | None, field: str, details: dict[str, str]) -> None:
    if value is not None and (problem := outbound_url_problem(value, settings()["allowed_private_hosts"])):
        details[field] = problem


def merge_aliases(data: dict[str, Any]) -> dict[str, Any]:
    """Seed spellings → ours, with aliases checked for contradictions."""
    details: dict[str, str] = {}
    if "team_id" in data:
        if "app_id" in data and data["app_id"] != data["team_id"]:
            details["team_id"] = "contradicts app_id (give one of them)"
        data.setdefault("app_id", data["team_id"])
    if "shared_team_slugs" in data:
        if "shared_app_slugs" in data and data["shared_app_slugs"] != data["shared_team_slugs"]:
            details["shared_team_slugs"] = "contradicts shared_app_slugs (give one of them)"
        data.setdefault("shared_app_slugs", data["shared_team_slugs"])
    if details:
        raise errors.BadRequest(details)
    data.pop("team_id", None)
    data.pop("shared_team_slugs", None)
    return data


def apply(cred: Credential, data: dict[str, Any], creating: bool) -> None:
    """Validate ``data`` against the org and the registry and copy it onto ``cred`` (not saved).

    In four steps, each a 400 naming every bad field it finds: the plain
    fields and URLs, who may use the credential, the connector's settings and
    secret, and finally whether the connector has what it needs to work.
    """
    reg = registry()
    details: dict[str, str] = {}
    _apply_fields(cred, data, creating, reg, details)
    _apply_access(cred, data, creating, details)
    if details:
        raise errors.BadRequest(details)
    _apply_settings(cred, data, creating, reg)
    _check_complete(cred, reg)


def _apply_fields(cred: Credential, data: dict[str, Any], creating: bool, reg, details: dict[str, str]) -> None:
    if "connector_name" in data or creating:
        name = data.get("connector_name") or "oauth2"
        cls = reg.by_connector(name)
        if cls is None or cls.auth == "credentials":
            known = ", ".join(sorted(reg.connectors()))
            details["connector_name"] = f"is not an installed OAuth2 or action-account connector (installed: {known})"
        else:
            cred.connector_name = name
    simple = {"name": "name", "mode": "mode", "oauth_url": "oauth_url", "oauth_token_url": "oauth_token_url",
              "oauth_client_id": "oauth_client_id", "oauth_grant_type": "oauth_grant_type",
              "oauthPkceCodeChallengeMethod": "pkce_method",
              "oauth_token_endpoint_auth_method": "token_endpoint_auth_method", "oauth_issuer": "oauth_issuer"}
    for key, attr in simple.items():
        if key in data:
            value = data[key]
            if isinstance(value, str) and key not in ("name",):
                value = value.strip() or None
            setattr(cred, attr, value)
    if "name" in data:
        cred.slug = slug_of(data["name"])
    for key, default in (("oauth_scope", ""), ("description", "")):
        if key in data:
            setattr(cred, key, (data[key] or default).strip() if key == "oauth_scope" else (data[key] or default))
    if "metadata" in data:
        cred.metadata = data["metadata"] or {}
    if "allowed_hosts" in data:
        cred.allowed_hosts = list(dict.fromkeys(data["allowed_hosts"]))
    _check_url(cred.oauth_url, "oauth_url", details)
    _check_url(cred.oauth_token_url, "oauth_token_url", details)
    if cred.oauth_issuer is not None and urlsplit(cred.oauth_issuer).scheme not in ("http", "https"):
        details["oauth_issuer"] = "must be the issuer identifier URL of the authorization server"


def _apply_access(cred: Credential, data: dict[str, Any], creating: bool, details: dict[str, str]) -> None:
    """App and read access (seed 003's team)."""
    if "app_id" in data:
        app_id = data["app_id"]
        if app_id is None:
            cred.app = None
        elif App.get_or_none(App.id == app_id, App.org == cred.org_id) is None:
            details["app_id"] = "is not an app of this organization"
        else:
            cred.app = app_id
    if "read_access" in data:
        cred.read_access = READ_ACCESS[data["read_access"]]
    elif creating:
        cred.read_access = "APP" if cred.app_id else "ORGANIZATION"
    if "shared_app_slugs" in data:
        cred.shared_app_slugs = list(dict.fromkeys(data["shared_app_slugs"]))
    if "folder_id" in data:
        cred.folder_id = data["folder_id"]
    if "live_credential_id" in data:
        problem = _live_credential_problem(cred, data["live_credential_id"])
        if problem:
            details["live_credential_id"] = problem
        else:
            cred.live_credential = data["live_credential_id"]
    if cred.read_access == "APP" and not cred.app_id and "app_id" not in details:
        details["read_access"] = "TEAM/APP needs app_id (or team_id): the app that owns the credential"
    if cred.read_access == "SPECIFIC_APPS":
        slugs = cred.shared_app_slugs or []
        if not slugs:
            details["shared_app_slugs"] = "is required when read_access is SPECIFIC_TEAMS/SPECIFIC_APPS"
        else:
            found = {a.slug for a in App.select(App.slug).where(App.org == cred.org_id, App.slug.in_(slugs))}
            for index, slug in enumerate(slugs):
                if slug not in found:
                    details[f"shared_app_slugs.{index}"] = "is not the slug of an app of this organization"


def _live_credential_problem(cred: Credential, live_id: str | None) -> str | None:
    """Why ``cred`` cannot be the test credential of ``live_id`` (None: it can; None clears it).

    The live credential is another credential of the same organization, not
    itself a test credential, with no other test credential.
    """
    if live_id is None:
        return None
    live = Credential.get_or_none(Credential.id == live_id, Credential.org == cred.org_id)
    if live is None or live.id == cred.id:
        return "is not another credential of this organization"
    if live.live_credential_id is not None:
        return "is itself a test credential"
    if Credential.select().where(Credential.live_credential == live.id, Credential.id != cred.id).exists():
        return "already has a test credential"
    if Credential.select().where(Credential.live_credential == cred.id).exists():
        return "cannot be set on a credential that has a test credential of its own"
    return None


def _apply_settings(cred: Credential, data: dict[str, Any], creating: bool, reg) -> None:
    """Connector settings (validated by the connector type's settings_schema) and the client secret."""
    details: dict[str, str] = {}
    cls = reg.by_connector(cred.connector_name)
    if "settings" in data or creating or "connector_name" in data:
        raw = data.get("settings") if "settings" in data else (cred.settings or {})
        raw = raw or {}
        if cls.settings_schema is not None:
            with errors.field_errors("settings"):
                cred.settings = cls.settings_schema().dump(cls.settings_schema().load(raw))
        elif raw:
            raise errors.BadRequest({"settings": f"connector {cred.connector_name!r} takes no settings"})
        else:
            cred.settings = {}

    if "oauth_client_secret" in data:
        secret = data["oauth_client_secret"]
        oauth.set_client_secret(cred, secret if secret else None)

    # URLs may hold {client_id} and {<settings key>} placeholders, and no other braces
    revoke_url = (cred.settings or {}).get("revoke_url") if isinstance(cred.settings, dict) else None
    for field, url in (("oauth_url", cred.oauth_url), ("oauth_token_url", cred.oauth_token_url),
                       ("settings.revoke_url", revoke_url if isinstance(revoke_url, str) else None)):
        problem = oauth.url_placeholder_problem(url, cred)
        if problem:
            details[field] = problem
    if details:
        raise errors.BadRequest(details)


def _check_complete(cred: Credential, reg) -> None:
    """What the connector needs to work at all."""
    details: dict[str, str] = {}
    cls = reg.by_connector(cred.connector_name)
    provider = oauth.provider_for(cred)
    if cls.auth == "oauth2":
        if not provider.token_url:
            details["oauth_token_url"] = "is required for this connector"
        if cred.oauth_grant_type == "authorization_code" and not provider.authorize_url:
            details["oauth_url"] = "is required for grant type authorization_code"
    if not cred.oauth_client_id:
        details["oauth_client_id"] = "is required"
    method = oauth.effective_auth_method(cred)
    if method != "none" and not cred.oauth_client_secret_encrypted:
        details["oauth_client_secret"] = f"is required for token endpoint auth method {method}"
    if cred.oauth_grant_type == "client_credentials" and method == "none":
        details["oauth_token_endpoint_auth_method"] = "client_credentials needs client authentication"
    if details:
        raise errors.BadRequest(details)

"""Where an action-account type may send the browser: the origins the hosted page's CSP allows.

``ActionAccountType.link_origins`` entries, ``{setting}`` placeholders filled
from the serving credential's settings, reduced to ``scheme://host[:port]``
(:func:`origin_of`, also used for the app's ``frame_ancestors``).
``accounts.py`` re-exports both names.
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from marshmallow import ValidationError

from . import errors, oauth
from .action_account_type import ActionAccountType
from .extensions import registry
from .models import App, Requirement
from .requirements import connection_type_name

_HOST_RE = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.?|[0-9a-f:.]+)$")


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` (lowercased) of an absolute http(s) URL, else None.

    Only plain DNS names and IP literals pass, so the result is safe inside a CSP header.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or not _HOST_RE.match(parts.hostname):
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    default = {"http": 80, "https": 443}[parts.scheme]
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def link_origins(app: App, req: Requirement) -> list[str]:
    """The origins the requirement's type may send the browser to (``ActionAccountType.link_origins``).

    Entries with ``{setting}`` placeholders are filled from the settings of the
    credential serving the app (loaded through the type's ``settings_schema``, so
    defaults apply); an entry that cannot be filled (no usable credential, unknown
    setting) is left out. The hosted page lists the result in its CSP ``form-action``.
    """
    cls = registry().get(connection_type_name(req))
    if cls is None or not issubclass(cls, ActionAccountType):
        return []
    out: list[str] = []
    cred_settings: dict[str, Any] | None = None
    for entry in cls.link_origins:
        if "{" in entry:
            if cred_settings is None:
                cred_settings = _credential_settings(cls, app, req)
            try:
                entry = entry.format_map({k: v for k, v in cred_settings.items() if isinstance(v, str)})
            except (KeyError, ValueError, IndexError):
                continue
        origin = origin_of(entry)
        if origin is not None and origin not in out:
            out.append(origin)
    return out


def _credential_settings(cls: type[ActionAccountType], app: App, req: Requirement) -> dict[str, Any]:
    try:
        cred = oauth.select_credential(app, cls.connector_name, (req.spec.get("data") or {}).get("credential_id"),
                                       grant_types=None)
    except errors.APIError:  # no usable credential: linking fails with its own message
        return {}
    raw = cred.settings or {}
    if cls.settings_schema is None:
        return raw
    try:
        return cls.settings_schema().load(raw)
    except ValidationError:
        return raw

"""marshmallow fields for connection-type schemas.

Everything in ``marshmallow.fields`` is re-exported, so a plugin needs one import::

    from connect_service import fields

    class DatabaseConfig(Schema):
        host = fields.Host(required=True)
        port = fields.Port(load_default=5432)
        password = fields.Secret(required=True)

The additions:

- :class:`Url`: an absolute ``http://`` or ``https://`` URL; any other scheme
  (``file:``, ``ftp:``, ``javascript:``…) and URLs carrying a user name or
  password are refused.
- :class:`Secret`: a non-blank string marked secret: a password input on the
  hosted page, never shown again by the API unless secrets are asked for.
- :class:`NonBlank`: a string that may not be empty or whitespace.
- :class:`Host`: a host name or IP address, without scheme, port or path.
- :class:`Port`: a TCP port, 1-65535.
- :class:`FullMatch`: a ``validate.Regexp`` that must match the whole value.

Each field states its rule for the OpenAPI document in ``openapi`` (JSON
Schema keywords the API's field converter adds), next to the code that
enforces it, so the two cannot drift apart. Every string of a request is also
documented free of NUL characters (:data:`NO_NUL`), which the service refuses.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from marshmallow import ValidationError, fields, validate
from marshmallow.fields import *  # noqa: F401,F403  (so plugins need one import)

HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")  # use with fullmatch (see FullMatch)

#: JSON Schema patterns (ECMA 262 and Python ``re`` read them alike). Lone surrogates, which the service refuses
#: in every body (``strict_json``), are not in them: ``\uD800-\uDFFF`` means lone surrogates only to engines that
#: match code points (a validator matching UTF-16 units would refuse every character outside the BMP), and
#: schemathesis' generator, given that range in a negated class, draws strings holding NUL. docs/api.md says so.
NO_NUL = r"^[^\u0000]*$"
#: whitespace spelled out (what ``str.isspace`` and ECMA's ``\s`` both count, ``\uFEFF`` included): ``\s``
#: itself means less to a validator reading the pattern as ASCII-only (``\x1c``-``\x1f``, ``\x85`` count as blank)
WHITESPACE = r"\t\n\u000B\f\r\u001C-\u001F \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\uFEFF"
NON_BLANK = rf"^[^\u0000]*[^\u0000{WHITESPACE}][^\u0000]*$"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
#: what :class:`Url` accepts, as documented: http(s), a plain host name, an optional port, URI characters
HTTP_URL = (rf"^[Hh][Tt][Tt][Pp][Ss]?://{_LABEL}(\.{_LABEL})*(:[1-9][0-9]{{0,3}})?"
            r"([/?#][A-Za-z0-9._~!$&'()*+,;=:%/?#-]*)?$")
#: a DNS name whose last label starts with a letter (so never an IP address)
DNS_NAME = rf"({_LABEL}\.)*[A-Za-z]([A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?"
#: the same, https only (plain http is for hosts the operator allows, which the document cannot know), and
#: ``{placeholder}`` braces allowed after the host (credential URLs are templates)
HTTPS_URL_TEMPLATE = "^[Hh][Tt][Tt][Pp][Ss]" + HTTP_URL[len("^[Hh][Tt][Tt][Pp][Ss]?"):].replace("%/?#-]", "%/?#{}-]")


class FullMatch(validate.Regexp):
    """``validate.Regexp`` judged with ``fullmatch``: the whole value must match.

    ``validate.Regexp`` uses ``re.match``, where ``$`` also matches before a final ``"\\n"``, so
    ``Regexp(r"^[a-z]+$")`` accepts ``"abc\\n"``; the same pattern in the OpenAPI document (ECMA regex) does
    not. The pattern is kept as written, so the document shows it unchanged::

        slug = fields.String(validate=fields.FullMatch(r"^[a-z0-9-]{1,63}$", error="must be a slug"))
    """

    def __call__(self, value):
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


class Url(fields.Url):
    """An absolute http:// or https:// URL (other schemes and embedded credentials are refused).

    Top-level domains are not required, so ``http://localhost:8080`` is valid;
    whether the service may *reach* a host is decided later by the guarded
    HTTP client, not here.
    """

    openapi = {"format": "uri", "pattern": HTTP_URL}

    default_error_messages = {
        "invalid": "must be an absolute http(s) URL",
        "userinfo": "must not contain a user name or password: put secrets in their own fields",
    }

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("schemes", {"http", "https"})
        kwargs.setdefault("require_tld", False)
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        url = super()._deserialize(value, attr, data, **kwargs)
        if urlsplit(url).username is not None or "@" in urlsplit(url).netloc:
            raise self.make_error("userinfo")
        return url


URL = Url


class NonBlank(fields.String):
    """A string that may not be empty or whitespace."""

    default_error_messages = {"blank": "cannot be blank"}
    openapi = {"minLength": 1, "pattern": NON_BLANK}

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if not text.strip():
            raise self.make_error("blank")
        return text


class Secret(NonBlank):
    """A secret string (API key, password, token).

    Rendered as a password input, left out of every API answer that does not
    ask for secrets, never re-shown on the hosted page. Surrounding whitespace
    (a pasted newline) is removed; a blank value is refused.
    """

    def __init__(self, **kwargs: Any):
        metadata = dict(kwargs.pop("metadata", None) or {})
        metadata.setdefault("secret", True)
        kwargs.setdefault("validate", validate.Length(max=10_000, error="must be at most {max} characters"))
        super().__init__(metadata=metadata, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        return super()._deserialize(value, attr, data, **kwargs).strip()


class Host(NonBlank):
    """A host name (``db.example.com``, ``localhost``) or an IP address; no scheme, port or path."""

    default_error_messages = {"host": "must be a host name or IP address, without scheme, port or path"}

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        candidate = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        try:
            ipaddress.ip_address(candidate)
            return candidate
        except ValueError:
            pass
        name = text.rstrip(".")
        if len(name) > 253 or not all(HOST_LABEL.fullmatch(label) for label in name.split(".")):
            raise self.make_error("host")
        return name.lower()


class Port(fields.Integer):
    """A TCP port number, 1-65535 (a numeric string such as ``"5432"`` is accepted, as forms send)."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("validate", validate.Range(min=1, max=65535, error="must be a port between 1 and 65535"))
        super().__init__(**kwargs)

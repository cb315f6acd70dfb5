"""Helpers the API modules share: path resolution before the body, keyset pagination."""
from __future__ import annotations

import base64
import binascii
import datetime
import functools
import json
import re
from typing import Any, Callable

import marshmallow as ma

from .. import errors


def resolve_path(**loaders: Callable[[str], Any]):
    """View decorator: turn path ids into rows before ``@blp.arguments`` judges the body.

    SPEC: the resource in the path is resolved before the body, so an unknown
    path id is a 404 whatever the body. ``resolve_path(app_id=load_app)``
    calls the view with ``app=<row>`` instead of ``app_id``. List it before the
    auth decorator in a MethodView's ``decorators`` (the last one listed is
    outermost, so authentication still runs first).
    """
    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            for name, load in loaders.items():
                if name in kwargs:
                    kwargs[name.removesuffix("_id")] = load(kwargs.pop(name))
            return view(*args, **kwargs)
        return wrapper
    return decorator


# --- pagination -----------------------------------------------------------------------------

#: every cursor the service hands out is unpadded base64url (or, for versions, a decimal number)
CURSOR_ALPHABET = re.compile(r"[A-Za-z0-9_-]{1,512}\Z", re.ASCII)
#: what a keyset cursor decodes to: an ISO timestamp as ``isoformat()`` writes it, and a row id
_CURSOR_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?\Z", re.ASCII)
_CURSOR_ID = re.compile(r"[A-Za-z0-9_-]{1,64}\Z", re.ASCII)
INVALID_CURSOR = "is not a valid cursor"


class PageArgs(ma.Schema):
    cursor = ma.fields.String(load_default=None, validate=ma.validate.Regexp(CURSOR_ALPHABET, error=INVALID_CURSOR),
                              metadata={"description": "opaque cursor from next_cursor"})
    limit = ma.fields.Integer(load_default=50, validate=ma.validate.Range(min=1, max=200))


def encode_cursor(created_at: datetime.datetime, row_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime.datetime, str]:
    """The ``(created_at, id)`` a cursor names; anything but what :func:`encode_cursor` writes is a 400."""
    try:
        if not CURSOR_ALPHABET.match(cursor):
            raise ValueError("alphabet")
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        created, row_id = json.loads(raw)
        if not (isinstance(created, str) and _CURSOR_TIME.match(created)
                and isinstance(row_id, str) and _CURSOR_ID.match(row_id)):
            raise ValueError("shape")
        return datetime.datetime.fromisoformat(created), row_id
    except (ValueError, TypeError, binascii.Error):
        raise errors.BadRequest({"cursor": INVALID_CURSOR}) from None


def paginate(query, model, args: dict[str, Any]) -> tuple[list, str | None]:
    """Keyset pagination on ``(created_at, id)``: stable under inserts, O(limit) per page."""
    limit = args.get("limit") or 50
    if args.get("cursor"):
        created, row_id = decode_cursor(args["cursor"])
        query = query.where((model.created_at > created) | ((model.created_at == created) & (model.id > row_id)))
    rows = list(query.order_by(model.created_at, model.id).limit(limit + 1))
    next_cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor

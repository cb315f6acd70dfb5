"""Helpers the API modules share: path resolution before the body, keyset pagination."""
from __future__ import annotations

import base64
import datetime
import functools
import json
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

class PageArgs(ma.Schema):
    cursor = ma.fields.String(load_default=None, metadata={"description": "opaque cursor from next_cursor"})
    limit = ma.fields.Integer(load_default=50, validate=ma.validate.Range(min=1, max=200))


def encode_cursor(created_at: datetime.datetime, row_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, row_id = json.loads(raw)
        return datetime.datetime.fromisoformat(created), str(row_id)
    except (ValueError, TypeError):
        raise errors.BadRequest({"cursor": "is not a valid cursor"}) from None


def paginate(query, model, args: dict[str, Any]) -> tuple[list, str | None]:
    """Keyset pagination on ``(created_at, id)``: stable under inserts, O(limit) per page."""
    limit = args.get("limit") or 50
    if args.get("cursor"):
        created, row_id = decode_cursor(args["cursor"])
        query = query.where((model.created_at > created) | ((model.created_at == created) & (model.id > row_id)))
    rows = list(query.order_by(model.created_at, model.id).limit(limit + 1))
    next_cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor

"""Helpers every API module shares: body loading and pagination."""
from __future__ import annotations

import base64
import datetime
import json
from typing import Any

import marshmallow as ma
from flask import request

from .. import errors
# re-exported while the API modules move over to the domain-level homes of these names
from ..auth import (authenticate_access_key, bearer, connect_identity, require_access_key,  # noqa: F401
                    require_connect_token)
from ..extensions import keyring, registry, settings  # noqa: F401
from ..timestamps import iso  # noqa: F401

BLANK = {"input": "cannot be blank"}




def raw_json_body() -> Any:
    """The request body as JSON; a blank body (absent, empty, ``null``, ``{}``) is a 400."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise errors.BadRequest(BLANK)
    mimetype = request.mimetype or ""
    if mimetype and mimetype != "application/json" and not mimetype.endswith("+json"):
        raise errors.UnsupportedMediaType({"input": "send the body as application/json"})
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise errors.BadRequest({"input": "is not valid JSON"}) from None
    except RecursionError:
        raise errors.BadRequest({"input": "is nested too deeply"}) from None
    if data is None or data == {}:
        raise errors.BadRequest(BLANK)
    if not isinstance(data, dict):
        raise errors.BadRequest({"input": "must be a JSON object"})
    nul = _nul_paths(data)
    if nul:  # PostgreSQL text cannot hold NUL: refuse it here rather than fail in the driver
        raise errors.BadRequest({path: "must not contain NUL characters" for path in nul[:10]})
    return data


def _nul_paths(value: Any, path: str = "") -> list[str]:
    """Field paths (dots for nesting) of every string key or value that contains a NUL character."""
    if isinstance(value, str):
        return [path or "input"] if "\x00" in value else []
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                found.append(path or "input")
            found += _nul_paths(item, child)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _nul_paths(item, f"{path}.{index}" if path else str(index))
    return found


def load_body(schema: ma.Schema | type[ma.Schema]) -> dict[str, Any]:
    """Load and validate the JSON body with ``schema``; errors become a 400 naming each field."""
    data = raw_json_body()
    instance = schema() if isinstance(schema, type) else schema
    try:
        return instance.load(data)
    except ma.ValidationError as exc:
        raise errors.BadRequest(errors.flatten_messages(exc.messages)) from None


def body_doc(schema: type[ma.Schema], description: str = "") -> dict:
    """``blp.doc(**body_doc(Schema))`` documents a body loaded with :func:`load_body`."""
    return {"requestBody": {"required": True, "description": description,
                            "content": {"application/json": {"schema": schema}}}}


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

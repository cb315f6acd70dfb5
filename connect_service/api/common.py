"""Helpers the API modules share: path resolution before the body, keyset pagination."""
from __future__ import annotations

import datetime
import functools
from typing import Any, Callable

import marshmallow as ma
import peewee as pw
from flask import Response, current_app, g

from .. import errors
from ..auth import access_key_is, access_key_query
from ..connections import get_org_connection
from ..db import compiled_sql, fetch_models
from ..fields import FullMatch
from ..models import AccessKey, Connection, Organization


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


def dumped(data: Any) -> Response:
    """A JSON answer of ``data`` that is already what the response schema's ``dump`` makes of it.

    flask-smorest returns a ``Response`` as it is, so the hot endpoints skip a marshmallow
    pass over values they built in the dumped form themselves (plain dicts, ISO strings);
    ``@blp.response`` still documents the schema. tests/test_hot_paths.py checks, for each
    view that answers this way, that dumping its answer with the schema changes nothing.
    """
    return current_app.json.response(data)


# --- an Access Key and the connection its route names, in one query ---------------------------------

def load_key_and_connection(key_hash: str, view_args: dict) -> tuple[AccessKey, dict] | None:
    """A ``require_access_key`` loader for ``/v1/connections/<conn_id>`` routes: the key, its org and the
    org's connection ``conn_id`` in one statement (SQL built once per process) instead of two.

    The connection is left-joined, so a valid key whose org has no such connection still loads
    (401 and 404 stay distinct); :func:`org_connection` hands it to ``resolve_path``.
    """
    sql = compiled_sql("api.key_and_connection", lambda: (
        access_key_query(Connection)
        .join_from(AccessKey, Connection, pw.JOIN.LEFT_OUTER,
                   on=(Connection.org == AccessKey.org) & (Connection.id == ""))
        .where(access_key_is(""))))
    conn_id = view_args.get("conn_id")
    found = fetch_models(sql, (conn_id, key_hash), AccessKey, Organization, Connection)
    if not found:
        return None
    key, key.org, conn = found[0]
    return key, {"conn_id": conn_id, "connection": conn if conn.id is not None else None}


def org_connection(conn_id: str) -> Connection:
    """``resolve_path`` loader: the caller's org's connection ``conn_id``, else 404; what
    :func:`load_key_and_connection` read with the key when it ran, else one lookup."""
    preloaded = g.get("preloaded")
    if isinstance(preloaded, dict) and preloaded.get("conn_id") == conn_id:
        if preloaded["connection"] is None:
            raise errors.NotFound()
        return preloaded["connection"]
    return get_org_connection(g.org.id, conn_id)


# --- pagination -----------------------------------------------------------------------------

#: a keyset cursor: microseconds since the epoch of the last row's created_at, a dot, its id. Every string the
#: pattern matches decodes (16 digits stay within datetime's range), so the document states the whole rule.
CURSOR_PATTERN = r"^[0-9]{1,16}\.[A-Za-z0-9_-]{1,100}$"
EPOCH = datetime.datetime(1970, 1, 1)


def cursor_field(pattern: str, description: str = "opaque cursor from next_cursor") -> ma.fields.String:
    """A ``cursor`` query argument whose shape is checked by ``pattern`` (documented as the same pattern)."""
    return ma.fields.String(load_default=None, validate=FullMatch(pattern, error="is not a valid cursor"),
                            metadata={"description": description})


class PageArgs(ma.Schema):
    cursor = cursor_field(CURSOR_PATTERN)
    limit = ma.fields.Integer(load_default=50, validate=ma.validate.Range(min=1, max=200))


class VersionPageArgs(PageArgs):
    cursor = cursor_field(r"^[0-9]{1,10}$", "the last version number seen (next_cursor)")


def encode_cursor(created_at: datetime.datetime, row_id: str) -> str:
    delta = created_at.replace(tzinfo=None) - EPOCH
    return f"{(delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds}.{row_id}"


def decode_cursor(cursor: str) -> tuple[datetime.datetime, str]:
    micros, _, row_id = cursor.partition(".")
    return EPOCH + datetime.timedelta(microseconds=int(micros)), row_id


def paginate(query, model, args: dict[str, Any]) -> tuple[list, str | None]:
    """Keyset pagination on ``(created_at, id)``: stable under inserts, O(limit) per page."""
    limit = args.get("limit") or 50
    if args.get("cursor"):
        created, row_id = decode_cursor(args["cursor"])
        query = query.where((model.created_at > created) | ((model.created_at == created) & (model.id > row_id)))
    rows = list(query.order_by(model.created_at, model.id).limit(limit + 1))
    next_cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor

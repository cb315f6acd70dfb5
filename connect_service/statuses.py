"""Per-user requirement statuses: what ``GET /v1/connect/requirements/statuses`` and the hosted page show.

Above both ``requirements.py`` (the requirements and how a connection fulfils
one) and the action-account code (which may first look the user's accounts up
at their platform), so neither has to import the other for this.
"""
from __future__ import annotations

import datetime
from typing import Any

import peewee as pw

from . import accounts
from .auth import token_app_query
from .db import compiled_sql, fetch_models, loaded_instance
from .extensions import registry
from .models import App, Connection, TokenRevocation
from .requirements import (STATUS_COLUMNS, deployed_requirements, requirement_status, requirement_view,
                           user_connections)
from .tokens import ConnectToken


def statuses_for(app: App, user_id: str, connections: list[Connection] | None = None) -> list[dict[str, Any]]:
    """Seed 001's requirements with ``status`` for one end user (the API and the hosted page).

    ``connections``: the user's connections (:data:`STATUS_COLUMNS`) if the caller already
    read them in this request; they are read again when an action-account lookup ran first.
    """
    reqs = deployed_requirements(app)
    reg = registry()
    synced = False
    for req in reqs:  # action-account types may look the user's accounts up at their platform
        synced = accounts.sync_status(app, user_id, req) or synced
    conns = user_connections(app, user_id) if connections is None or synced else connections
    return [dict(requirement_view(r), status=requirement_status(r, conns, reg)) for r in reqs]


def load_app_and_connections(identity: ConnectToken) \
        -> tuple[App, datetime.datetime | None, list[Connection]] | None:
    """A ``require_connect_token`` loader for statuses: the app, the user's revocation cut-off and the
    user's connections, in one query (SQL built once per process), instead of one for the app and
    one for the connections."""
    rows = fetch_models(app_and_connections_sql(), (identity.user_id, identity.user_id, identity.app_id), App,
                        extra=(TokenRevocation.tokens_valid_after, *STATUS_COLUMNS))
    if not rows:
        return None
    (app,), (user_cut, *_) = rows[0]
    conns = [loaded_instance(Connection, STATUS_COLUMNS, values[1:]) for _, values in rows if values[1] is not None]
    return app, user_cut, conns


def app_and_connections_sql() -> str:
    """The SQL of :func:`load_app_and_connections` (parameters: user id, user id, app id); bench/ EXPLAINs it."""
    return compiled_sql("statuses.app_and_connections", lambda: (
        token_app_query(*STATUS_COLUMNS)
        .join_from(App, Connection, pw.JOIN.LEFT_OUTER,
                   on=(Connection.app == App.id) & (Connection.customer_id == ""))
        .where(App.id == "")))

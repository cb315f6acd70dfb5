"""Workflow versions, requirements, per-user requirement status and the config an end user submits.

"Config" is what an end user types into a connection type's form (an API key,
a URL); "credential" means an OAuth client registration (``credentials.py``).
"""
from __future__ import annotations

import uuid
from typing import Any

import marshmallow as ma
import peewee
from marshmallow import fields, validate

from . import audit, errors, outbox
from .connections import notify_activated, seal_settings
from .db import compiled_sql, fetch_columns, write_transaction
from .extensions import registry
from .fields import FullMatch, NonBlank
from .models import App, Connection, Requirement, WorkflowVersion, utcnow
from .timestamps import iso

CONNECTION = "connection"
MAX_VERSION = 2**31 - 1


class SpecSchema(ma.Schema):
    type = NonBlank(required=True)
    data = fields.Dict(required=True)


class RequirementInSchema(ma.Schema):
    key = NonBlank(required=True, validate=FullMatch(r"^[A-Za-z0-9_.:-]{1,100}$",
                                                           error="must be 1-100 letters, digits, _ . : -"))
    type = NonBlank(required=True)
    title = NonBlank(required=True, validate=validate.Length(max=200))
    description = fields.String(load_default="", validate=validate.Length(max=2000))
    spec = fields.Nested(SpecSchema, required=True)


class VersionCreateSchema(ma.Schema):
    requirements = fields.List(fields.Nested(RequirementInSchema), required=True)


def requirement_public_id(app_id: str, key: str) -> str:
    """uuid5(app id, key): the same key keeps its id across versions."""
    return str(uuid.uuid5(uuid.UUID(app_id), key))


#: requirements of versions this worker has served, by (app id, version number); a version's
#: requirements never change once it is created (versions are only deleted with their app)
_VERSIONS: dict[tuple[str, int], tuple[Requirement, ...]] = {}
VERSION_CACHE_SIZE = 1024


def version_requirements(app_id: str, number: int) -> tuple[Requirement, ...]:
    """Requirements of version ``number`` of an app in declared order, cached per worker.

    The cache key is the deployed version the caller just read from the app row, so
    deploying another version is seen on the next request. Callers must not modify the rows.
    """
    key = (app_id, number)
    found = _VERSIONS.get(key)
    if found is None:
        found = tuple(Requirement.select().join(WorkflowVersion)
                      .where(WorkflowVersion.app == app_id, WorkflowVersion.number == number)
                      .order_by(Requirement.position))
        if len(_VERSIONS) >= VERSION_CACHE_SIZE:
            _VERSIONS.clear()
        _VERSIONS[key] = found
    return found


def deployed_requirements(app: App) -> list[Requirement]:
    """Requirements of the app's deployed version in declared order; 404 without one."""
    if app.deployed_version is None:
        raise errors.NotFound(message="Not Found")
    return list(version_requirements(app.id, app.deployed_version))


def find_requirement(app: App, public_id: str) -> Requirement:
    """A requirement of the deployed version by public id, else 404."""
    if app.deployed_version is None:
        raise errors.NotFound()
    for req in version_requirements(app.id, app.deployed_version):
        if req.public_id == public_id:
            return req
    raise errors.NotFound()


def requirement_view(req: Requirement) -> dict[str, Any]:
    """Seed 001's requirement object."""
    return {"id": req.public_id, "type": req.type, "title": req.title,
            "description": req.description, "spec": req.spec}


def connection_type_name(req: Requirement) -> str:
    """The connection type a requirement asks for (``spec.data.type``, or the requirement type)."""
    if req.type == CONNECTION:
        return req.spec["data"]["type"]
    return req.type


def validate_requirements(items: list[dict[str, Any]], registry) -> None:
    """400 naming ``requirements.N.field`` for unknown types, bad specs and duplicate keys."""
    details: dict[str, str] = {}
    seen: set[str] = set()
    for index, item in enumerate(items):
        path = f"requirements.{index}"
        if item["key"] in seen:
            details[f"{path}.key"] = "is used twice in this version"
        seen.add(item["key"])
        spec = item["spec"]
        if spec.get("type") != item["type"]:
            details[f"{path}.spec.type"] = f"must equal the requirement type {item['type']!r}"
            continue
        data = spec.get("data")
        if not isinstance(data, dict):
            details[f"{path}.spec.data"] = "must be an object"
            continue
        if item["type"] == CONNECTION:
            name = data.get("type")
            cls = registry.get(name) if isinstance(name, str) else None
            if cls is None:
                details[f"{path}.spec.data.type"] = "is not a registered connection type"
            elif cls.auth == "action_account":
                details[f"{path}.spec.data.type"] = f"is an action-account type: use type {cls.name!r}"
        else:
            cls = registry.get(item["type"])
            if cls is None or cls.auth != "action_account":
                details[f"{path}.type"] = "must be 'connection' or a registered action-account type"
            else:  # the type judges its own spec.data (e.g. which platform app)
                details.update(errors.flatten_messages(cls.spec_errors(data), f"{path}.spec.data"))
    if details:
        raise errors.BadRequest(details)


def new_version(app: App, items: list[dict[str, Any]]) -> WorkflowVersion:
    """Validate requirements (:class:`RequirementInSchema` data) against the registry and store a new version."""
    validate_requirements(items, registry())
    return create_version(app, items)


def page_versions(app: App, cursor: str | None, limit: int) -> tuple[list[WorkflowVersion], str | None]:
    """An app's versions oldest first; the cursor is the last number seen (versions are never renumbered)."""
    query = WorkflowVersion.select().where(WorkflowVersion.app == app.id)
    if cursor:
        if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 10:  # "²".isdigit() is True
            raise errors.BadRequest({"cursor": "is not a valid cursor"})
        query = query.where(WorkflowVersion.number > int(cursor))
    rows = list(query.order_by(WorkflowVersion.number).limit(limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, str(rows[-1].number) if more else None


def create_version(app: App, items: list[dict[str, Any]]) -> WorkflowVersion:
    """Store a new numbered version with its requirements (not deployed)."""
    for _ in range(5):
        try:
            with write_transaction():
                last = (WorkflowVersion.select(peewee.fn.MAX(WorkflowVersion.number))
                        .where(WorkflowVersion.app == app.id).scalar()) or 0
                version = WorkflowVersion.create(app=app, number=last + 1)
                for position, item in enumerate(items):
                    Requirement.create(
                        version=version, public_id=requirement_public_id(app.id, item["key"]),
                        key=item["key"], type=item["type"], title=item["title"],
                        description=item.get("description") or "", spec=item["spec"], position=position,
                    )
                return version
        except peewee.IntegrityError:  # a concurrent create took the number: try the next one
            continue
    raise errors.Conflict(message="Conflict")


def deploy_version(app: App, number: int) -> WorkflowVersion:
    if not 1 <= number <= MAX_VERSION:  # beyond any stored number (and SQLite's 64-bit integers)
        raise errors.NotFound()
    version = WorkflowVersion.get_or_none(WorkflowVersion.app == app.id, WorkflowVersion.number == number)
    if version is None:
        raise errors.NotFound()
    now = utcnow()
    with write_transaction():
        WorkflowVersion.update(deployed_at=now).where(WorkflowVersion.id == version.id).execute()
        App.update(deployed_version=number, updated_at=now).where(App.id == app.id).execute()
    version.deployed_at = now
    app.deployed_version = number
    return version


def version_view(version: WorkflowVersion) -> dict[str, Any]:
    reqs = Requirement.select().where(Requirement.version == version.id).order_by(Requirement.position)
    return {
        "number": version.number,
        "requirements": [dict(requirement_view(r), key=r.key) for r in reqs],
        "created_at": iso(version.created_at),
        "deployed_at": iso(version.deployed_at),
    }


#: the columns :func:`requirement_status` reads
STATUS_COLUMNS = (Connection.id, Connection.status, Connection.disabled, Connection.requirement_id,
                  Connection.type, Connection.connector_name, Connection.account_key)


def user_connections(app: App, user_id: str) -> list[Connection]:
    """Every connection of one end user of one app (index: app, customer_id, requirement_id).

    Only the :data:`STATUS_COLUMNS` are loaded (what :func:`requirement_status` reads).
    """
    sql = compiled_sql("requirements.user_connections", lambda: Connection.select(*STATUS_COLUMNS).where(
        Connection.app == "", Connection.customer_id == ""))
    return fetch_columns(sql, (app.id, user_id), Connection, STATUS_COLUMNS)


def requirement_status(req: Requirement, connections: list[Connection], registry) -> str:
    """``completed`` when an active, enabled connection fulfils the requirement, else ``pending``."""
    cls = registry.get(connection_type_name(req))
    for conn in connections:
        if conn.status != "active" or conn.disabled:
            continue
        if conn.requirement_id == req.public_id and (cls is None or conn.type == cls.name):
            return "completed"
        if cls is not None and cls.auth == "action_account" and conn.connector_name == cls.connector_name:
            if conn.account_key == cls.requirement_key(req.spec["data"]):
                return "completed"
    return "pending"


def submit_config(app: App, user_id: str, req: Requirement, body: dict[str, Any]) -> Connection:
    """Validate ``{"type", "config"}`` for a connection requirement and store it, in place on resubmission.

    Shared by ``POST /v1/connect/requirements/{id}/credentials`` and the hosted page.
    Raises ``BadRequest`` with per-field details.
    """
    submitted_type = body.get("type")
    if req.type != CONNECTION:
        raise errors.BadRequest({"input": f"this requirement is fulfilled by linking an account: "
                                          f"POST /v1/connect/requirements/{req.public_id}/accounts"})
    expected = connection_type_name(req)
    details: dict[str, str] = {}
    if submitted_type is None:
        details["type"] = "is required"
    elif not isinstance(submitted_type, str):
        details["type"] = "must be a string"
    elif not submitted_type.strip():
        details["type"] = "cannot be blank"
    elif submitted_type != expected:
        details["type"] = f"must be {expected!r}, the type this requirement declares"
    if "config" not in body or body.get("config") is None:
        details["config"] = "is required"
    elif not isinstance(body["config"], dict):
        details["config"] = "must be an object"
    unknown = set(body) - {"type", "config"}
    for key in sorted(unknown):
        details[key] = "is not a known field"
    if details:
        raise errors.BadRequest(details)
    cls = registry().get(expected)
    if cls is None:
        raise errors.BadRequest({"type": "is no longer a registered connection type"})
    if cls.auth == "oauth2":
        raise errors.BadRequest({"type": f"{expected} is OAuth2-based: start it with "
                                         f"POST /v1/connect/requirements/{req.public_id}/oauth2/authorize"})
    if cls.auth != "credentials":
        raise errors.BadRequest({"type": f"{expected} does not take credentials"})
    if body["config"] == {}:
        raise errors.BadRequest({"config": "cannot be blank"})
    with errors.field_errors("config"):
        config = cls.load_config(body["config"])

    now = utcnow()
    for _ in range(3):
        with write_transaction():
            conn = Connection.get_or_none(Connection.app == app.id, Connection.customer_id == user_id,
                                          Connection.requirement_id == req.public_id)
            if conn is None:
                conn = Connection(org=app.org_id, app=app.id, customer_id=user_id, requirement_id=req.public_id)
                conn._new = True
            else:
                conn._new = False
                if conn.disabled:
                    raise errors.Conflict({"input": "the app has disabled this connection; ask the app to "
                                                    "enable it before submitting new credentials"})
            conn.type = cls.name
            conn.connector_name = cls.connector_name
            conn.integration_id = cls.name
            conn.settings_encrypted = seal_settings(conn, config)
            conn.status, conn.status_reason, conn.updated_at = "active", None, now
            conn.expires_at = None
            try:
                with Connection._meta.database.atomic():
                    conn.save(force_insert=conn._new)
            except peewee.IntegrityError:  # a concurrent first submission won: update that row
                continue
            action = "connection.created" if conn._new else "connection.updated"
            outbox.emit_connection(conn, action)
            audit.record(action, org_id=conn.org_id, target_type="connection", target_id=conn.id, app_id=app.id)
        notify_activated(conn)
        return conn
    raise errors.Conflict()

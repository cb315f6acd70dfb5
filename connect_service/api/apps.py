"""Apps, their workflow versions and deployment (management API)."""
from __future__ import annotations

from flask import g
from flask.views import MethodView
from . import Blueprint

from .. import errors
from ..models import App, Connection, Credential, WorkflowVersion, utcnow
from ..requirements import create_version, deploy_version, validate_requirements, version_view
from . import schemas
from .common import PageArgs, iso, paginate, registry, require_access_key, resolve_path

blp = Blueprint("apps", __name__, url_prefix="/v1/apps", description="Apps and workflow versions")

SECURITY = [{"accessKey": []}]


def app_view(app: App) -> dict:
    return {
        "id": app.id, "name": app.name, "slug": app.slug, "hostname": app.hostname,
        "visibility": app.visibility, "return_urls": app.return_urls or [],
        "frame_ancestors": app.frame_ancestors or [], "deployed_version": app.deployed_version,
        "created_at": iso(app.created_at), "updated_at": iso(app.updated_at),
    }


def get_org_app(app_id: str) -> App:
    """An app of the caller's org, else 404 (another org's app is not revealed)."""
    app = App.get_or_none(App.id == app_id, App.org == g.org.id)
    if app is None:
        raise errors.NotFound()
    return app


def slugify(name: str) -> str:
    import re

    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60]
    return slug or "app"


def _check_unique(hostname: str | None, slug: str | None, exclude: str | None = None) -> None:
    details = {}
    if hostname:
        q = App.select().where(App.hostname == hostname)
        if exclude:
            q = q.where(App.id != exclude)
        if q.exists():
            details["hostname"] = "is already used by another app"
    if slug:
        q = App.select().where(App.org == g.org.id, App.slug == slug)
        if exclude:
            q = q.where(App.id != exclude)
        if q.exists():
            details["slug"] = "is already used by another app of this organization"
    if details:
        raise errors.Conflict(details)


def create_app_row(org, data: dict) -> App:
    """Create an app (shared by the API and ``connect-service apps deploy``)."""
    slug = data.get("slug") or slugify(data["name"])
    if not data.get("slug"):
        base, n = slug, 2
        while App.select().where(App.org == org.id, App.slug == slug).exists():
            slug, n = f"{base}-{n}", n + 1
    return App.create(org=org, name=data["name"], slug=slug, hostname=data["hostname"],
                      visibility=data.get("visibility", "private"), return_urls=data.get("return_urls", []),
                      frame_ancestors=data.get("frame_ancestors", []))


@blp.route("")
class Apps(MethodView):
    decorators = [require_access_key]

    @blp.doc(security=SECURITY)
    @blp.arguments(schemas.AppCreateSchema)
    @blp.response(201, schemas.AppSchema)
    def post(self, data):
        """Create an app"""
        _check_unique(data["hostname"], data.get("slug"))
        return app_view(create_app_row(g.org, data))

    @blp.doc(security=SECURITY)
    @blp.arguments(PageArgs, location="query", as_kwargs=True)
    @blp.response(200, schemas.list_of(schemas.AppSchema))
    def get(self, **args):
        """List apps"""
        rows, cursor = paginate(App.select().where(App.org == g.org.id), App, args)
        return {"data": [app_view(a) for a in rows], "next_cursor": cursor}


@blp.route("/<string:app_id>")
class AppItem(MethodView):
    decorators = [resolve_path(app_id=get_org_app), require_access_key]

    @blp.doc(security=SECURITY)
    @blp.response(200, schemas.AppSchema)
    def get(self, app):
        """Get an app"""
        return app_view(app)

    @blp.doc(security=SECURITY)
    @blp.arguments(schemas.AppPatchSchema)
    @blp.response(200, schemas.AppSchema)
    def patch(self, data, app):
        """Update an app"""
        _check_unique(data.get("hostname"), data.get("slug"), exclude=app.id)
        for key, value in data.items():
            setattr(app, key, value)
        app.updated_at = utcnow()
        app.save()
        return app_view(app)

    @blp.doc(security=SECURITY)
    @blp.response(204)
    def delete(self, app):
        """Delete an app: its connections (revoked at the provider where possible), own credentials, versions"""
        from ..lifecycle import delete_connection
        from .credentials import delete_credential

        for conn in Connection.select().where(Connection.app == app.id):
            delete_connection(conn)
        for cred in Credential.select().where(Credential.app == app.id, Credential.read_access == "APP"):
            delete_credential(cred)
        # credentials that merely named this app as their team stay, organization-owned
        Credential.update(app=None).where(Credential.app == app.id).execute()
        app.delete_instance(recursive=True)


@blp.route("/<string:app_id>/versions")
class Versions(MethodView):
    decorators = [resolve_path(app_id=get_org_app), require_access_key]

    @blp.doc(security=SECURITY)
    @blp.arguments(schemas.VersionCreateSchema)
    @blp.response(201, schemas.VersionSchema)
    def post(self, data, app):
        """Create a workflow version with its requirements"""
        validate_requirements(data["requirements"], registry())
        return version_view(create_version(app, data["requirements"]))

    @blp.doc(security=SECURITY)
    @blp.arguments(PageArgs, location="query", as_kwargs=True)
    @blp.response(200, schemas.list_of(schemas.VersionSchema))
    def get(self, app, **args):
        """List an app's workflow versions, oldest first (the cursor is the last number seen)"""
        query = WorkflowVersion.select().where(WorkflowVersion.app == app.id)
        if args.get("cursor"):
            if not args["cursor"].isdigit() or len(args["cursor"]) > 10:
                raise errors.BadRequest({"cursor": "is not a valid cursor"})
            query = query.where(WorkflowVersion.number > int(args["cursor"]))
        rows = list(query.order_by(WorkflowVersion.number).limit(args["limit"] + 1))
        more = len(rows) > args["limit"]
        rows = rows[:args["limit"]]
        return {"data": [version_view(v) for v in rows], "next_cursor": str(rows[-1].number) if more else None}


@blp.route("/<string:app_id>/versions/<int:number>/deploy")
class Deploy(MethodView):
    decorators = [resolve_path(app_id=get_org_app), require_access_key]

    @blp.doc(security=SECURITY)
    @blp.response(200, schemas.VersionSchema)
    def post(self, app, number):
        """Deploy a workflow version (its requirements become the app's)"""
        return version_view(deploy_version(app, number))

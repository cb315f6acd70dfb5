"""``/v1/apps``: the HTTP face of ``apps.py`` and ``requirements.py`` (apps, workflow versions, deployment)."""
from __future__ import annotations

from flask import g
from flask.views import MethodView

from .. import apps, requirements, tokens
from ..apps import AppCreateSchema, AppPatchSchema, app_view
from ..auth import require_access_key
from ..models import App
from ..requirements import VersionCreateSchema, version_view
from . import Blueprint, schemas
from .common import PageArgs, VersionPageArgs, paginate, resolve_path
from .openapi import ACCESS_KEY

blp = Blueprint("apps", __name__, url_prefix="/v1/apps", description="Apps and workflow versions")


def _org_app(app_id: str) -> App:
    return apps.get_for_org(g.org.id, app_id)


@blp.route("")
class Apps(MethodView):
    decorators = [require_access_key]

    @blp.operation("createApp", 400, 401, 409, 413, 415, security=ACCESS_KEY)
    @blp.arguments(AppCreateSchema)
    @blp.response(201, schemas.AppSchema)
    def post(self, data):
        """Create an app"""
        return app_view(apps.create(g.org, data))

    @blp.operation("listApps", 400, 401, security=ACCESS_KEY)
    @blp.arguments(PageArgs, location="query", as_kwargs=True)
    @blp.response(200, schemas.list_of(schemas.AppSchema))
    def get(self, **args):
        """List apps"""
        rows, cursor = paginate(App.select().where(App.org == g.org.id), App, args)
        return {"data": [app_view(a) for a in rows], "next_cursor": cursor}


@blp.route("/<string:app_id>")
class AppItem(MethodView):
    decorators = [resolve_path(app_id=_org_app), require_access_key]

    @blp.operation("getApp", 401, 404, security=ACCESS_KEY)
    @blp.response(200, schemas.AppSchema)
    def get(self, app):
        """Get an app"""
        return app_view(app)

    @blp.operation("updateApp", 400, 401, 404, 409, 413, 415, security=ACCESS_KEY)
    @blp.arguments(AppPatchSchema)
    @blp.response(200, schemas.AppSchema)
    def patch(self, data, app):
        """Update an app"""
        return app_view(apps.update(app, data))

    @blp.operation("deleteApp", 401, 404, security=ACCESS_KEY)
    @blp.response(204)
    def delete(self, app):
        """Delete an app: its connections (revoked at the provider where possible), own credentials, versions"""
        apps.delete(app)


@blp.route("/<string:app_id>/user-verification-secret")
class UserVerificationSecret(MethodView):
    decorators = [resolve_path(app_id=_org_app), require_access_key]

    @blp.operation("rotateUserVerificationSecret", 401, 404, 409, security=ACCESS_KEY)
    @blp.response(200, schemas.AppSchema)
    def post(self, app):
        """Rotate the app's user_verification_secret: the answer shows the new one once (409 unless "required")"""
        return app_view(apps.rotate_user_verification_secret(app))


# ``path``: a user id may contain "/" (it is any string up to 200 characters)
@blp.route("/<string:app_id>/users/<path:user_id>/tokens")
class UserTokens(MethodView):
    decorators = [resolve_path(app_id=_org_app), require_access_key]

    @blp.operation("revokeUserTokens", 400, 401, 404, security=ACCESS_KEY, parameters=[
        {"in": "path", "name": "user_id", "required": True, "description": "percent-encoded; may contain `/`",
         "schema": {"type": "string", "minLength": 1, "maxLength": tokens.USER_ID_MAX, "pattern": "^[^/]"}}])
    @blp.response(204)
    def delete(self, app, user_id):
        """Revoke every connect token minted for this end user so far (tokens minted afterwards work)"""
        tokens.revoke_user_tokens(app, user_id)


@blp.route("/<string:app_id>/versions")
class Versions(MethodView):
    decorators = [resolve_path(app_id=_org_app), require_access_key]

    @blp.operation("createVersion", 400, 401, 404, 409, 413, 415, security=ACCESS_KEY)
    @blp.arguments(VersionCreateSchema)
    @blp.response(201, schemas.VersionSchema)
    def post(self, data, app):
        """Create a workflow version with its requirements"""
        return version_view(requirements.new_version(app, data["requirements"]))

    @blp.operation("listVersions", 400, 401, 404, security=ACCESS_KEY)
    @blp.arguments(VersionPageArgs, location="query", as_kwargs=True)
    @blp.response(200, schemas.list_of(schemas.VersionSchema))
    def get(self, app, **args):
        """List an app's workflow versions, oldest first (the cursor is the last number seen)"""
        rows, cursor = requirements.page_versions(app, args.get("cursor"), args["limit"])
        return {"data": [version_view(v) for v in rows], "next_cursor": cursor}


@blp.route("/<string:app_id>/versions/<int:number>/deploy")
class Deploy(MethodView):
    decorators = [resolve_path(app_id=_org_app), require_access_key]

    @blp.operation("deployVersion", 401, 404, security=ACCESS_KEY)
    @blp.response(200, schemas.VersionSchema)
    def post(self, app, number):
        """Deploy a workflow version (its requirements become the app's)"""
        return version_view(requirements.deploy_version(app, number))

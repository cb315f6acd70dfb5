"""``connect-service apps deploy FILE.toml``: an app and its requirements from a file.

::

    [app]
    name = "Helpdesk triage"
    hostname = "triage.example.com"
    visibility = "public"
    return_urls = ["https://triage.example.com/done"]

    [[requirements]]
    key = "gmail"
    type = "pipedream_account"
    title = "Connect your Gmail account"
    description = "Used to send triage replies on your behalf."
    spec = { type = "pipedream_account", data = { app_slug = "gmail" } }

The app is matched by hostname (created when missing, updated otherwise);
every run creates and deploys a new version.
"""
from __future__ import annotations

import click
import marshmallow as ma

from . import apps, errors
from .apps import AppCreateSchema, app_view
from .db import database
from .extensions import registry
from .models import App, Organization
from .requirements import VersionCreateSchema, create_version, deploy_version, validate_requirements, version_view


def deploy_from_file(doc: dict, org_id: str) -> dict:
    """Create or update the file's app and deploy a new version; errors are one-line ``ClickException``s."""
    try:
        app_data = AppCreateSchema().load(doc.get("app") or {})
    except ma.ValidationError as exc:
        raise errors.invalid_input(exc.messages, "app") from None
    try:
        reqs = VersionCreateSchema().load({"requirements": doc.get("requirements") or []})["requirements"]
    except ma.ValidationError as exc:
        raise errors.BadRequest(errors.flatten_messages(exc.messages)) from None
    with database.connection_context():
        org = Organization.get_or_none(Organization.id == org_id)
        if org is None:
            raise click.ClickException(f"no organization {org_id!r}")
        validate_requirements(reqs, registry())  # errors.APIError: field details
        app = App.get_or_none(App.hostname == app_data["hostname"])
        if app is not None and app.org_id != org.id:
            raise click.ClickException(f"hostname {app_data['hostname']} belongs to another organization")
        if app is None:
            app = apps.create(org, app_data)
        else:
            # through apps.update, so public → private revokes the app's tokens as the API does
            given = doc.get("app") or {}
            apps.update(app, {key: app_data[key] for key in
                              ("name", "visibility", "return_urls", "frame_ancestors", "user_verification")
                              if key in given})
        version = deploy_version(app, create_version(app, reqs).number)
        return {"app": app_view(app), "version": version_view(version)}

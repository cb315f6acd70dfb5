"""The ``connect-service`` command group (a Flask CLI group).

Every command that creates something prints it as one JSON object on stdout.
``generate-key`` needs no configuration and no database.
"""
from __future__ import annotations

import json
import sys
import tomllib

import click
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext

from .config import ConfigError, generate_key
from .extensions import registry


def _create_app():
    from .app import create_app

    try:
        return create_app()
    except ConfigError as exc:
        click.echo(f"connect-service: {exc}", err=True)
        sys.exit(2)


@click.group(cls=FlaskGroup, create_app=_create_app, add_default_commands=False, add_version_option=False,
             load_dotenv=False, set_debug_flag=False)
def cli():
    """Manage a connect-service instance."""


def emit(obj) -> None:
    click.echo(json.dumps(obj, sort_keys=False))


@cli.command("generate-key", with_appcontext=False)
def generate_key_command():
    """Print a fresh encryption key (for CONNECT_ENCRYPTION_KEYS; comma-separate several, first encrypts)."""
    click.echo(generate_key())


@cli.command("init-db")
@with_appcontext
def init_db():
    """Create the database tables (idempotent)."""
    from .migrations import migrate

    applied = migrate()
    emit({"status": "ok", "applied": applied})


@cli.command("migrate")
@with_appcontext
def migrate_command():
    """Apply pending schema migrations (same as init-db)."""
    from .migrations import migrate

    emit({"status": "ok", "applied": migrate()})


@cli.command("create-org")
@click.argument("name")
@with_appcontext
def create_org(name):
    """Create an organization."""
    from .db import database
    from .models import Organization

    with database.connection_context():
        org = Organization.create(name=name)
    emit({"id": org.id, "name": org.name})


@cli.command("create-access-key")
@click.option("--org", "org_id", required=True, help="organization id")
@click.option("--name", default="", help="a label for the key")
@with_appcontext
def create_access_key_command(org_id, name):
    """Create an Access Key; its plaintext is printed once and stored only as a hash."""
    from .access_keys import create_access_key, key_view
    from .db import database
    from .models import Organization

    with database.connection_context():
        org = Organization.get_or_none(Organization.id == org_id)
        if org is None:
            raise click.ClickException(f"no organization {org_id!r}")
        key, plaintext = create_access_key(org, name)
        out = key_view(key, plaintext)
    emit(dict(out, org_id=org_id))


@cli.group("apps")
def apps_group():
    """Apps and their workflow versions."""


@apps_group.command("deploy")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--org", "org_id", required=True, help="organization id")
@with_appcontext
def apps_deploy(path, org_id):
    """Create or update the app described in PATH (TOML) and deploy a new version of its requirements."""
    from .deploy_file import deploy_from_file

    with open(path, "rb") as fh:
        try:
            doc = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise click.ClickException(f"{path}: {exc}") from None
    emit(deploy_from_file(doc, org_id))


@cli.command("plugins")
@with_appcontext
def plugins_command():
    """List registered connection types, one JSON object a line: GET /v1/connection-types' items plus
    the plugin (the name `disabled_plugins` takes) and the distribution each comes from."""
    reg = registry()
    for item in reg.describe():
        info = reg.plugin_of(item["name"])
        emit(dict(item, plugin=info.name, distribution=info.distribution, version=info.version))


def main() -> None:
    cli(prog_name="connect-service")


@cli.command("refresh-due")
@click.option("--margin", type=int, default=None, help="seconds ahead of expiry (default: refresh_margin_seconds)")
@click.option("--batch-size", type=int, default=100, show_default=True)
@with_appcontext
def refresh_due(margin, batch_size):
    """Refresh every OAuth connection expiring within the margin (cron-safe on several hosts)."""
    from .refresh import run_refresh_due

    sys.exit(run_refresh_due(margin=margin, batch_size=batch_size, echo=lambda line: click.echo(line, err=True)))


@cli.command("rotate-keys")
@click.option("--batch-size", type=int, default=200, show_default=True)
@with_appcontext
def rotate_keys(batch_size):
    """Re-encrypt every secret with the first key of CONNECT_ENCRYPTION_KEYS (idempotent)."""
    from .rotation import rotate_all

    summary = rotate_all(batch_size=batch_size, echo=lambda line: click.echo(line, err=True))
    emit(summary)
    if summary["failed"]:  # values no key decrypts: keep the old key until they are dealt with
        sys.exit(1)


DEMO_APP = {
    "app": {"name": "Demo helpdesk triage", "hostname": "demo.localhost", "visibility": "public",
            "return_urls": []},
    "requirements": [
        {"key": "gmail", "type": "pipedream_account", "title": "Connect your Gmail account",
         "description": "Used to send triage replies on your behalf.",
         "spec": {"type": "pipedream_account", "data": {"app_slug": "gmail"}}},
        {"key": "helpdesk", "type": "connection", "title": "Helpdesk API key",
         "description": "Read-only access to your helpdesk tickets.",
         "spec": {"type": "connection", "data": {"type": "dynamiq.connections.HttpApiKey"}}},
    ],
}


@cli.command("demo")
@click.option("--bind", default="127.0.0.1:5000", show_default=True, help="where the service will listen")
@with_appcontext
def demo(bind):
    """Seed a demo organization, Access Key and public app (two requirements) and print how to try them."""
    from .access_keys import create_access_key
    from .db import database
    from .deploy_file import deploy_from_file
    from .migrations import migrate
    from .models import Organization

    migrate()
    with database.connection_context():
        org = Organization.get_or_none(Organization.name == "Demo") or Organization.create(name="Demo")
        key, plaintext = create_access_key(org, "demo")
    result = deploy_from_file(DEMO_APP, org.id)
    host = result["app"]["hostname"]
    base = f"http://{bind}"
    requirements = {r["key"]: r["id"] for r in result["version"]["requirements"]}
    emit({"org_id": org.id, "access_key": plaintext, "app_id": result["app"]["id"], "app_hostname": host,
          "deployed_version": result["version"]["number"], "requirement_ids": requirements})
    click.echo("\nTry it (an end user's connect token, her requirements, then her API key):", err=True)
    click.echo(f"  TOKEN=$(curl -s -X POST {base}/v1/connect/tokens -H 'Host: {host}' "
               f"-H 'Content-Type: application/json' -d '{{\"user_id\": \"alice\"}}' "
               f"| python3 -c 'import json,sys; print(json.load(sys.stdin)[\"token\"])')", err=True)
    click.echo(f"  curl -s {base}/v1/connect/requirements/statuses -H \"Authorization: Bearer $TOKEN\"", err=True)
    click.echo(f"  curl -s -X POST {base}/v1/connect/requirements/{requirements['helpdesk']}/credentials "
               f"-H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' "
               f"-d '{{\"type\": \"dynamiq.connections.HttpApiKey\", \"config\": {{\"url\": "
               f"\"https://helpdesk.example.com/api\", \"api_key\": \"hd_live_9f3a7c1e2b54\"}}}}'", err=True)
    click.echo(f"  curl -s {base}/v1/connections -H 'Authorization: Bearer {plaintext}'", err=True)


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@with_appcontext
def serve(host, port):
    """Run the development server (use gunicorn with wsgi.py in production)."""
    current_app.run(host=host, port=port, use_reloader=False, threaded=True)


if __name__ == "__main__":
    main()

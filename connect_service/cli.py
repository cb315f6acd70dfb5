"""The ``connect-service`` command group (a Flask CLI group).

Every command that creates something prints it as one JSON object on stdout.
``--help``, ``generate-key``, ``generate-secret`` and ``plugins`` need no
configuration and no database and create nothing. A failure caused by the
configuration or the database is one line on stderr starting
``connect-service:`` and a non-zero exit, never a traceback. No module reads
settings when imported, so the imports sit at the top as everywhere else.
"""
from __future__ import annotations

import json
import os
import sys
import tomllib

import click
import peewee
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext

from . import errors
from .access_keys import create_access_key, key_view
from .app import create_app
from .config import ConfigError, generate_key, generate_secret, load_config
from .db import database, describe_error, write_transaction
from .demo import seed_demo
from .deploy_file import deploy_from_file
from .extensions import settings
from .migrations import current_version, head, migrate, pending
from .models import Organization
from .plugins import get_plugin_manager
from .refresh_due import DEFAULT_CONCURRENCY, MAX_CONCURRENCY, run_refresh_due
from .retention import prune_all
from .rotation import pending_count, rotate_all
from .webhook_delivery import run as run_webhook_delivery

#: commands that run on a database behind the code's migrations (they bring it up to date)
SCHEMA_COMMANDS = {"migrate", "init-db", "demo"}


class Failure(click.ClickException):
    """A one-line failure: ``connect-service: <message>`` on stderr, exit code 2."""
    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"connect-service: {self.format_message()}", err=True)


def _create_app():

    command = click.get_current_context().info_name
    return create_app(require_schema=command not in SCHEMA_COMMANDS)


class ConnectGroup(FlaskGroup):
    """FlaskGroup that lists its own commands without building the app, and turns set-up failures into one line."""
    def list_commands(self, ctx):
        return click.Group.list_commands(self, ctx)  # FlaskGroup would load the app (needs settings) for --help

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise Failure(str(exc)) from None
        except peewee.DatabaseError as exc:
            raise Failure(f"CONNECT_DATABASE_URL: cannot use the database: {describe_error(exc, _database_url())}"
                          ) from None
        except click.ClickException as exc:
            if type(exc) is not click.ClickException:  # usage errors keep click's own format
                raise
            raise Failure(exc.format_message()) from None


def _database_url() -> str:
    try:
        return load_config(validate=False).get("database_url") or ""
    except ConfigError:
        return ""


@click.group(cls=ConnectGroup, create_app=_create_app, add_default_commands=False, add_version_option=False,
             load_dotenv=False, set_debug_flag=False)
def cli():
    """Manage a connect-service instance."""


def emit(obj) -> None:
    click.echo(json.dumps(obj, sort_keys=False))


@cli.command("generate-key", with_appcontext=False)
def generate_key_command():
    """Print a fresh encryption key (for CONNECT_ENCRYPTION_KEYS; comma-separate several, first encrypts)."""
    click.echo(generate_key())


@cli.command("generate-secret", with_appcontext=False)
def generate_secret_command():
    """Print a fresh secret key (for CONNECT_SECRET_KEY)."""
    click.echo(generate_secret())


@cli.command("migrate")
@click.option("--check", is_flag=True, help="only report: exit 1 when steps are pending, 0 when up to date")
@with_appcontext
def migrate_command(check):
    """Apply pending schema migration steps, one transaction each (safe on several hosts at once)."""
    if check:
        waiting = pending()
        for step in waiting:
            click.echo(f"migrate: pending {step.label}: {step.description}", err=True)
        emit({"status": "pending" if waiting else "ok", "version": current_version(), "head": head(),
              "pending": [step.label for step in waiting]})
        sys.exit(1 if waiting else 0)
    applied = migrate(echo=lambda line: click.echo(line, err=True))
    emit({"status": "ok", "version": current_version(), "applied": [step.label for step in applied]})


@cli.command("init-db")
@click.pass_context
def init_db(ctx):
    """Create or upgrade the database schema (an alias of migrate)."""
    ctx.invoke(migrate_command, check=False)


@cli.command("create-org")
@click.argument("name")
@click.option("--allow-duplicate", is_flag=True, help="create it even if an organization has this name")
@with_appcontext
def create_org(name, allow_duplicate):
    """Create an organization (names are unique unless --allow-duplicate)."""
    name = name.strip()
    if not name:
        raise Failure("create-org: NAME must not be empty")
    with database.connection_context(), write_transaction():
        existing = Organization.get_or_none(Organization.name == name)
        if existing is not None and not allow_duplicate:
            raise Failure(f"create-org: an organization named {name!r} exists ({existing.id}); "
                          "pass --allow-duplicate to create another")
        org = Organization.create(name=name)
    emit({"id": org.id, "name": org.name})


@cli.command("create-access-key")
@click.option("--org", "org_id", required=True, help="organization id")
@click.option("--name", default="", help="a label for the key")
@with_appcontext
def create_access_key_command(org_id, name):
    """Create an Access Key; its plaintext is printed once and stored only as a hash."""
    with database.connection_context():
        org = Organization.get_or_none(Organization.id == org_id)
        if org is None:
            raise Failure(f"no organization {org_id!r}")
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
    """Create or update the app described in PATH (TOML) and deploy a new version of its requirements.

    A file error is printed as ``FILE: field: message`` lines on stderr (exit code 2).
    """

    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        _file_errors(path, {"file": f"is not UTF-8 text (invalid byte at offset {exc.start})"})
    except tomllib.TOMLDecodeError as exc:
        _file_errors(path, {"toml": str(exc)})
    try:
        emit(deploy_from_file(doc, org_id))
    except errors.APIError as exc:
        _file_errors(path, exc.details or {"file": exc.message})


def _file_errors(path: str, details: dict) -> None:
    for field, message in details.items():
        click.echo(f"{path}: {field}: {message}", err=True)
    sys.exit(2)


@cli.command("plugins", with_appcontext=False)
def plugins_command():
    """List registered connection types, one JSON object a line: GET /v1/connection-types' items plus
    the plugin (the name `disabled_plugins` takes) and the distribution each comes from."""

    registry = get_plugin_manager(load_config(validate=False))  # only disabled_plugins matters here
    for item in registry.describe():
        info = registry.plugin_of(item["name"])
        emit(dict(item, plugin=info.name, distribution=info.distribution, version=info.version))


def main() -> None:
    cli(prog_name="connect-service")


@cli.command("refresh-due")
@click.option("--margin", type=int, default=None, help="seconds ahead of expiry (default: refresh_margin_seconds)")
@click.option("--batch-size", type=int, default=100, show_default=True,
              help="connections claimed at a time (one lease claim and one read per batch)")
@click.option("--concurrency", type=click.IntRange(1, MAX_CONCURRENCY), default=DEFAULT_CONCURRENCY,
              show_default=True, help="token endpoint calls in flight at once; also the most provider answers "
                                      "a killed run can lose (see docs/operations.md)")
@with_appcontext
def refresh_due(margin, batch_size, concurrency):
    """Refresh every OAuth connection expiring within the margin (cron-safe on several hosts).

    On a terminal a progress bar; otherwise one summary line per batch (for cron logs).
    """

    if not sys.stderr.isatty():
        sys.exit(run_refresh_due(margin=margin, batch_size=batch_size, concurrency=concurrency,
                                 echo=lambda line: click.echo(line, err=True)))
    lines: list[str] = []
    # how many are due is only known as the batches come, so the bar counts without a length
    with click.progressbar((i for i in ()), label="refresh-due", show_pos=True, file=sys.stderr) as bar:
        code = run_refresh_due(margin=margin, batch_size=batch_size, concurrency=concurrency, echo=lines.append,
                               progress=bar.update)
    processed = [line for line in lines if ": processed " in line]
    for line in [line for line in lines if ": processed " not in line] + processed[-1:]:
        click.echo(line, err=True)  # failures, purged sessions, then the final count
    sys.exit(code)


@cli.command("rotate-keys")
@click.option("--batch-size", type=int, default=200, show_default=True)
@with_appcontext
def rotate_keys(batch_size):
    """Re-encrypt every secret with the first key of CONNECT_ENCRYPTION_KEYS (idempotent).

    On a terminal a progress bar; otherwise one line per batch and column. Then one summary line.
    """

    if sys.stderr.isatty():
        lines: list[str] = []
        with click.progressbar(length=pending_count(), label="rotate-keys", show_pos=True, file=sys.stderr) as bar:
            summary = rotate_all(batch_size=batch_size, echo=lines.append, progress=bar.update)
        for line in lines:
            if ": batch of " not in line:
                click.echo(line, err=True)
    else:
        summary = rotate_all(batch_size=batch_size, echo=lambda line: click.echo(line, err=True))
    click.echo(f"rotate-keys: {summary['rotated']} re-encrypted, {summary['already_current']} already current, "
               f"{summary['failed']} failed, {summary['changed_concurrently']} changed concurrently", err=True)
    emit(summary)
    if summary["failed"]:  # values no key decrypts: keep the old key until they are dealt with
        sys.exit(1)


@cli.command("deliver-webhooks")
@click.option("--once", is_flag=True, help="deliver what is due now, then exit (for cron and tests)")
@click.option("--batch-size", type=int, default=10, show_default=True, help="deliveries claimed at a time")
@click.option("--interval", type=float, default=2.0, show_default=True, help="seconds between polls when idle")
@with_appcontext
def deliver_webhooks(once, batch_size, interval):
    """Send pending webhook deliveries (any number of deliverers on any number of hosts)."""
    totals = run_webhook_delivery(once=once, batch_size=max(1, batch_size), interval=interval,
                                  echo=lambda line: click.echo(line, err=True))
    emit(totals)


@cli.command("prune")
@with_appcontext
def prune_command():
    """Delete audit events older than audit_retention_days, expired authorization sessions, old rate-limit rows."""
    days = settings()["audit_retention_days"]
    summary = prune_all(days)
    click.echo(f"prune: {summary['audit_events']} audit events (older than {days} days), "
               f"{summary['authorization_sessions']} authorization sessions, "
               f"{summary['rate_limit_rows']} rate-limit rows", err=True)
    emit(summary)


@cli.command("demo")
@click.option("--bind", default="127.0.0.1:5000", show_default=True, help="where the service will listen")
@with_appcontext
def demo(bind):
    """Seed (once) a demo organization, Access Key and public app and print how to try them; reruns reuse them."""
    org, plaintext, result = seed_demo(current_app.instance_path)
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


@cli.command("serve", with_appcontext=False)
@click.option("--bind", default=None, help="address to listen on (default: CONNECT_BIND or 127.0.0.1:8000)")
@click.option("--workers", type=int, default=None, help="worker processes (default: CONNECT_WORKERS or 2 x cores + 1)")
def serve(bind, workers):
    """Serve with gunicorn and deploy/gunicorn.conf.py (what the systemd unit runs)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    conf = os.path.join(root, "deploy", "gunicorn.conf.py")
    if not os.path.exists(conf) or not os.path.exists(os.path.join(root, "wsgi.py")):
        raise Failure(f"serve: {conf} and wsgi.py come with a source checkout; run gunicorn from one")
    if bind:
        os.environ["CONNECT_BIND"] = bind
    if workers:
        os.environ["CONNECT_WORKERS"] = str(workers)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "gunicorn", "-c", conf, "--chdir", root, "wsgi:app"])


if __name__ == "__main__":
    main()

"""The demo a newcomer clicks through (``connect-service demo``, run by ``scripts/dev.sh``).

Idempotent: the org, its Access Key (kept mode 0600 in the instance folder)
and the app are created once; later runs reuse them and print the same key.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any

from .access_keys import create_access_key
from .apps import app_view
from .auth import authenticate_access_key
from .db import database
from .deploy_file import deploy_from_file
from .migrations import migrate
from .models import App, Organization, WorkflowVersion
from .requirements import version_view

#: the demo app asks only for what works without outside accounts: an HttpApiKey connection. A
#: pipedream_account requirement (e.g. Gmail) needs a pipedream credential with real platform access first.
DEMO_APP = {
    "app": {"name": "Demo helpdesk triage", "hostname": "demo.localhost", "visibility": "public",
            "return_urls": []},
    "requirements": [
        {"key": "helpdesk", "type": "connection", "title": "Helpdesk API key",
         "description": "Read-only access to your helpdesk tickets.",
         "spec": {"type": "connection", "data": {"type": "dynamiq.connections.HttpApiKey"}}},
    ],
}
#: the demo's Access Key, kept (mode 0600) in the instance folder so that every run prints the same one
DEMO_KEY_FILE = "demo-access-key"


def seed_demo(instance_path: str) -> tuple[Organization, str, dict[str, Any]]:
    """``(org, access key plaintext, {"app", "version"})`` of the demo, created on the first run only."""
    migrate()
    key_path = os.path.join(instance_path, DEMO_KEY_FILE)
    with database.connection_context():
        org = Organization.get_or_none(Organization.name == "Demo") or Organization.create(name="Demo")
        plaintext = _read_private(key_path)
        key = authenticate_access_key(plaintext)
        if key is None or key.org_id != org.id:
            _, plaintext = create_access_key(org, "demo")
            _write_private(key_path, plaintext)
        app = App.get_or_none(App.hostname == DEMO_APP["app"]["hostname"], App.org == org)
        version = app and app.deployed_version and WorkflowVersion.get_or_none(
            WorkflowVersion.app == app, WorkflowVersion.number == app.deployed_version)
        result = {"app": app_view(app), "version": version_view(version)} if version else None
    wanted = [r["key"] for r in DEMO_APP["requirements"]]
    if result is None or [r["key"] for r in result["version"]["requirements"]] != wanted:
        result = deploy_from_file(DEMO_APP, org.id)
    return org, plaintext, result


def _read_private(path: str) -> str | None:
    with contextlib.suppress(FileNotFoundError), open(path) as fh:
        return fh.read().strip() or None
    return None


def _write_private(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
        fh.write(text + "\n")
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT

"""Per-user requirement statuses: what ``GET /v1/connect/requirements/statuses`` and the hosted page show.

Above both ``requirements.py`` (the requirements and how a connection fulfils
one) and the action-account code (which may first look the user's accounts up
at their platform), so neither has to import the other for this.
"""
from __future__ import annotations

from typing import Any

from . import accounts
from .extensions import registry
from .models import App
from .requirements import (deployed_requirements, requirement_status, requirement_view,
                           user_connections)


def statuses_for(app: App, user_id: str) -> list[dict[str, Any]]:
    """Seed 001's requirements with ``status`` for one end user (the API and the hosted page)."""
    reqs = deployed_requirements(app)
    reg = registry()
    for req in reqs:  # action-account types may look the user's accounts up at their platform
        accounts.sync_status(app, user_id, req)
    conns = user_connections(app, user_id)
    return [dict(requirement_view(r), status=requirement_status(r, conns, reg)) for r in reqs]

"""Acme Helpdesk for connect-service: a connection type and a lifecycle observer.

Registered through the ``connect_service`` entry point in ``pyproject.toml``;
connect-service itself knows nothing about it.
"""
from __future__ import annotations

import logging
from typing import Any

from marshmallow import Schema, validate

from connect_service import ConnectionType, ValidationError, fields, hookimpl

log = logging.getLogger(__name__)


class HelpdeskConfig(Schema):
    url = fields.Url(required=True, metadata={"label": "Helpdesk URL", "placeholder": "https://acme.example.com"})
    api_key = fields.Secret(required=True, metadata={"label": "API key", "help": "Settings → API → New key"})
    team = fields.String(load_default="support", validate=validate.OneOf(["support", "sales", "billing"]),
                         metadata={"label": "Team"})


class Helpdesk(ConnectionType):
    """An Acme Helpdesk account: its URL, an ``hd_`` API key and the team whose tickets are read."""

    name = "acme.connections.Helpdesk"
    title = "Acme Helpdesk"
    description = "Read tickets from an Acme Helpdesk."
    schema = HelpdeskConfig

    def validate(self, config: dict[str, Any]) -> None:
        if not config["api_key"].startswith("hd_"):
            raise ValidationError("must start with hd_ (an Acme Helpdesk API key)", "api_key")


@hookimpl
def register_connection_types() -> list[type[ConnectionType]]:
    return [Helpdesk]


@hookimpl
def connection_activated(connection: dict[str, Any]) -> None:
    if connection["type"] == Helpdesk.name:
        log.info("acme helpdesk connected for customer %s (connection %s)",
                 connection["customer_id"], connection["id"])

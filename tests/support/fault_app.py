"""A WSGI app factory for fault tests: ``gunicorn … 'tests.support.fault_app:build()'``.

It is ``wsgi.py``'s app plus one plugin, written against the public plugin API only, whose
connection types can be told to stop at an exact point of a request so that a test can
``kill -9`` the worker there:

- ``faults.connections.Slow`` (credentials): ``validate`` blocks while the file ``block-validate``
  exists in ``$CONNECT_FAULT_DIR``: the submission is checked, nothing is written yet;
- ``faults.connections.OAuth2`` (connector ``faults_oauth2``): the provider's
  ``parse_token_response`` blocks while ``block-token`` exists: the code has been exchanged at the
  provider, the tokens are not stored yet.

A blocked worker first writes its pid into ``<flag>.pid`` (the test's signal that the request
reached the point, and which process to kill).
"""
from __future__ import annotations

import os
import sys
import time

from marshmallow import Schema

from connect_service import ConnectionType, OAuth2Provider, create_app, fields, hookimpl

SLOW = "faults.connections.Slow"
OAUTH2 = "faults.connections.OAuth2"
CONNECTOR = "faults_oauth2"


def pause_while_flagged(flag: str, limit: float = 120.0) -> None:
    """Block while ``$CONNECT_FAULT_DIR/<flag>`` exists, after writing this process's pid to ``<flag>.pid``."""
    directory = os.environ.get("CONNECT_FAULT_DIR")
    if not directory or not os.path.exists(os.path.join(directory, flag)):
        return
    with open(os.path.join(directory, f"{flag}.pid.tmp"), "w") as fh:
        fh.write(str(os.getpid()))
    os.replace(os.path.join(directory, f"{flag}.pid.tmp"), os.path.join(directory, f"{flag}.pid"))
    deadline = time.monotonic() + limit  # never block a worker forever if a test dies
    while os.path.exists(os.path.join(directory, flag)) and time.monotonic() < deadline:
        time.sleep(0.02)


class SlowConfig(Schema):
    api_key = fields.Secret(required=True, metadata={"label": "API key"})


class Slow(ConnectionType):
    """A credentials type whose validation can be held (see the module docstring)."""

    name = SLOW
    title = "Fault-injection credentials"
    schema = SlowConfig

    def validate(self, config):
        """Hold here while the test's flag exists."""
        pause_while_flagged("block-validate")


class PausingProvider(OAuth2Provider):
    """The generic provider, except that reading a token response can be held."""

    def parse_token_response(self, status, data):
        """Hold after the provider answered, before anything is stored."""
        pause_while_flagged("block-token")
        return super().parse_token_response(status, data)


class FaultOAuth2(ConnectionType):
    """An OAuth2 type (generic provider, URLs from the credential) whose token parsing can be held."""

    name = OAUTH2
    title = "Fault-injection OAuth2"
    auth = "oauth2"
    connector_name = CONNECTOR
    provider = PausingProvider(offline_access="scope", token_endpoint_auth_method="client_secret_basic")


@hookimpl
def register_connection_types():
    return [Slow, FaultOAuth2]


def build():
    """The service with this module registered as a plugin (importing the module builds nothing)."""
    return create_app(plugins=[sys.modules[__name__]])

"""Fuzz the JSON API from its own ``/openapi.json`` with schemathesis (issue 7, item 8).

Every operation gets ``CONNECT_FUZZ_EXAMPLES`` (default 30) positive and as
many negative (schema-violating) examples, derandomized, authenticated as the
operation declares: an org's Access Key or an end user's connect token. Path
ids are mostly the real objects of a seeded org (so bodies get judged rather
than 404'd). Checks: not_a_server_error, status_code_conformance,
content_type_conformance, response_schema_conformance,
negative_data_rejection, ignored_auth. DNS is limited to loopback, so nothing
the fuzzer invents is ever contacted. The numbers are printed (``-s``).
"""
from __future__ import annotations

import os
import socket
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (content_type_conformance, ignored_auth, negative_data_rejection,
                                               response_schema_conformance, status_code_conformance)

from connect_service.db import database
from connect_service.models import Connection
from tests.conftest import SEED_REQUIREMENTS

EXAMPLES = int(os.environ.get("CONNECT_FUZZ_EXAMPLES", "30"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection, ignored_auth]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
#: path parameters filled with the seeded objects (positive examples of non-DELETE operations)
OAUTH2 = "dynamiq.connections.OAuth2"


@pytest.fixture
def loopback_dns_only(monkeypatch):
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, bytes):
            host = host.decode()
        if host in LOOPBACK:
            return real(host, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, "fuzzing: only loopback resolves")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def seeded(connect):
    """An org with a public app (seed requirements + an OAuth2 one), a user's connection and a credential."""
    app = connect.create_app_with_requirements(SEED_REQUIREMENTS + [
        {"key": "account", "type": "connection", "title": "Account",
         "spec": {"type": "connection", "data": {"type": OAUTH2}}}], return_urls=["https://app.example.com/done"])
    token = connect.token(app, "fuzz-user")
    helpdesk = connect.requirement_id(app, "helpdesk")
    r = connect.submit_credentials(token, helpdesk, "dynamiq.connections.HttpApiKey",
                                   {"url": "https://helpdesk.example.com", "api_key": "k"})
    assert r.status_code == 201
    r = connect.client.post("/v1/credentials", headers=connect.auth, json={
        "name": "custom", "mode": "OAUTH", "connector_name": "oauth2", "oauth_url": "https://idp.example.com/auth",
        "oauth_token_url": "https://idp.example.com/token", "oauth_client_id": "cid", "oauth_client_secret": "cs",
        "oauth_grant_type": "authorization_code", "allowed_hosts": ["*.example.com"]})
    assert r.status_code == 201, r.get_json()
    with connect.app.app_context(), database.connection_context():
        conn_id = Connection.get(Connection.customer_id == "fuzz-user").id
    return {
        "app": app, "token": token, "conn_id": conn_id, "credential_id": r.get_json()["id"],
        "requirements": {"credentials": helpdesk, "authorize": connect.requirement_id(app, "account"),
                         "accounts": connect.requirement_id(app, "gmail")},
    }


def real_ids(op_path: str, seeded: dict) -> dict[str, object]:
    ids: dict[str, object] = {"app_id": seeded["app"]["id"], "hub_id": seeded["app"]["id"],
                              "conn_id": seeded["conn_id"], "credential_id": seeded["credential_id"],
                              "connector_id": "oauth2", "number": 1}
    for suffix, rid in seeded["requirements"].items():
        if op_path.endswith(suffix) or op_path.endswith(f"oauth2/{suffix}"):
            ids["requirement_id"] = rid
    return ids


def auth_headers(op, connect, seeded) -> dict[str, str]:
    security = op.definition.raw.get("security")
    if security is None:
        security = op.schema.raw_schema.get("security", [])
    names = {name for requirement in security for name in requirement}
    headers = {}
    if op.path == "/v1/connect/tokens":
        headers["Host"] = seeded["app"]["hostname"]  # the only host that serves it
    if "accessKey" in names:
        headers["Authorization"] = f"Bearer {connect.access_key}"
    elif "connectToken" in names:
        headers["Authorization"] = f"Bearer {seeded['token']}"
    return headers


def fuzz_operation(op, mode, headers, seeded, calls, statuses, failures):
    """Run ``EXAMPLES`` derandomized examples of one operation in one generation mode."""

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case):
        key = (op.label, mode.value)
        calls[key] += 1
        # three positive examples in four use the seeded objects; the fourth keeps generated ids
        if mode is GenerationMode.POSITIVE and op.method.upper() != "DELETE" and calls[key] % 4:
            for name, value in real_ids(op.path, seeded).items():
                if case.path_parameters and name in case.path_parameters:
                    case.path_parameters[name] = value
        call_headers = dict(headers)
        if case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER):
            call_headers.pop("Authorization", None)  # the example tests a missing or malformed credential
        try:
            response = case.call_and_validate(headers=call_headers, checks=CHECKS)
            statuses[response.status_code] += 1
        except (Exception, BaseExceptionGroup) as exc:  # a failed check: record it, keep fuzzing, fail at the end
            failures.append((op.label, mode.value, str(exc)[:1500]))
            statuses["failed"] += 1

    try:
        run()
    except Unsatisfiable:  # nothing to negate (e.g. no parameters and no body): no negative examples exist
        assert mode is GenerationMode.NEGATIVE, op.label


def test_fuzz_openapi(connect, seeded, loopback_dns_only, capsys):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", connect.app)
    # credentials are sent explicitly per operation (and ignored_auth probes without them), not generated
    schema.config.generation.update(with_security_parameters=False)
    failures: list[tuple[str, str, str]] = []
    calls: Counter = Counter()
    statuses: Counter = Counter()
    operations = []
    for result in schema.get_all_operations():
        op = result.ok()
        operations.append(op)
        headers = auth_headers(op, connect, seeded)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz_operation(op, mode, headers, seeded, calls, statuses, failures)
    examples = sum(calls.values())
    with capsys.disabled():
        print(f"\nschemathesis: {len(operations)} operations, {examples} examples "
              f"({sum(v for (_, m), v in calls.items() if m == 'positive')} positive, "
              f"{sum(v for (_, m), v in calls.items() if m == 'negative')} negative), "
              f"{len(failures)} failures; statuses {dict(sorted(statuses.items(), key=str))}")
        groups: dict[tuple, list[str]] = {}
        for label, mode, text in failures:
            kinds = tuple(sorted({line.strip() for line in text.splitlines() if line.startswith("- ")}))
            groups.setdefault((label, mode, kinds), []).append(text)
        for (label, mode, kinds), texts in groups.items():
            print(f"--- {label} [{mode}] x{len(texts)}: {'; '.join(kinds)}\n{texts[0]}")
    assert len(operations) >= 30
    assert not failures, f"{len(failures)} fuzzing failures (see output)"

"""Fuzz the JSON API from its own ``/openapi.json`` with schemathesis (issue 7, item 8).

Every operation gets ``CONNECT_FUZZ_EXAMPLES`` (default 30) positive and as
many negative (schema-violating) examples, derandomized, authenticated as the
operation declares: an org's Access Key or an end user's connect token. Path
ids are mostly the real objects of a seeded org (so bodies get judged rather
than 404'd). Checks: not_a_server_error (a 502 bad_gateway from a provider the
proxy cannot reach is the provider's failure, not ours), status_code_conformance,
content_type_conformance, response_schema_conformance,
negative_data_rejection, ignored_auth. DNS is limited to loopback, so nothing
the fuzzer invents is ever contacted. The numbers are printed (``-s``).
"""
from __future__ import annotations

import json
import os
import re
import socket
from collections import Counter
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (content_type_conformance, ignored_auth, negative_data_rejection,
                                               response_schema_conformance, status_code_conformance)

from connect_service.db import database
from connect_service.models import Connection
from tests.conftest import SEED_REQUIREMENTS
from tests.support.fuzz_checks import upstream_failures_are_not_server_errors

EXAMPLES = int(os.environ.get("CONNECT_FUZZ_EXAMPLES", "30"))
CHECKS = [upstream_failures_are_not_server_errors, status_code_conformance, content_type_conformance, response_schema_conformance,
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


# --- hostile input classes (issue 12 item 4) -----------------------------------------------------
# schemathesis generates JSON that Python's encoder writes, so it never sends a lone surrogate, a
# 1000-level nesting, NaN or 1e400, and its query strings are valid UTF-8. These strategies do, in
# every body field (top level and one level down), every query argument and every path id.

_RAW = "\x01raw:"  # placeholder prefix for tokens json.dumps cannot write; replaced in the text


def _raw(token: str) -> str:
    return f"{_RAW}{token}\x01"


surrogates = st.builds(lambda before, s, after: before + s + after, st.text(max_size=5),
                       st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), st.text(max_size=5))
deep_nesting = st.builds(lambda n, kind: _raw(("[" * n + "]" * n) if kind else ('{"a":' * n + "1" + "}" * n)),
                         st.integers(min_value=33, max_value=5000), st.booleans())
bad_numbers = st.sampled_from([_raw(t) for t in ("NaN", "Infinity", "-Infinity", "1e400", "-1e999",
                                                 "1" + "0" * 30, str(2 ** 63), "1" * 5000)])
foreign_digits = st.sampled_from(["²", "١٢٣", "٣", "１２", "Ⅻ", "0²", "𝟗"])
hostile_value = st.one_of(surrogates, deep_nesting, bad_numbers, foreign_digits)
# percent-encoded query values: foreign digits, invalid UTF-8 (a surrogate's bytes, overlong, cut short), NUL
hostile_query = st.one_of(foreign_digits.map(lambda s: quote(s, safe="")),
                          st.sampled_from(["%ED%A0%80", "%C0%AF", "NaN", "Infinity", "1e400", "9" * 40,
                                           "%F0%9F", "%00"]))


def _encode(body) -> bytes:
    text = json.dumps(body)
    # the placeholders were dumped as JSON strings: put the raw token in their place, quotes and all
    return re.sub(r'"\\u0001raw:(.*?)\\u0001"', lambda m: m.group(1), text).encode("utf-8", "surrogatepass")


def _body_fields(op, spec) -> list[tuple[str, bool]]:
    """(property, is an object) of the operation's JSON body schema; [] without a body."""
    content = op.definition.raw.get("requestBody", {}).get("content", {}).get("application/json")
    if not content:
        return []
    schema = content.get("schema", {})
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return [(name, prop.get("type") == "object" or "additionalProperties" in prop)
            for name, prop in (schema.get("properties") or {"input": {}}).items()]


def _strict(data: bytes):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    value = json.loads(data, parse_constant=refuse)
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # a lone surrogate raises here
    return value


def test_fuzz_hostile_input(connect, seeded, loopback_dns_only, capsys):
    """Surrogates, deep nesting, NaN/Infinity/huge numbers and foreign digits, everywhere: never a 500.

    Every answer is strict JSON, and afterwards the seeded org's and user's reads still answer 200
    (nothing poisonous was stored).
    """
    spec = connect.client.get("/openapi.json").get_json()
    schema = schemathesis.openapi.from_dict(spec)
    failures: list[str] = []
    statuses: Counter = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    examples = max(5, EXAMPLES // 2)

    for op in operations:
        headers = auth_headers(op, connect, seeded)
        fields = _body_fields(op, spec)
        params = op.definition.raw.get("parameters", [])
        query_names = [p["name"] for p in params if p["in"] == "query"]
        path_names = re.findall(r"{(\w+)}", op.path)
        ids = real_ids(op.path, seeded) if op.method.upper() != "DELETE" else {}  # keep the seeded objects

        @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.generate])
        @given(data=st.data())
        def run(data):
            path_values = {name: str(ids.get(name, "x")) for name in path_names}
            path_values = {k: quote(v, safe="") for k, v in path_values.items()}
            if path_names and data.draw(st.integers(0, 3), "hostile path id?") == 3:  # about one in four
                name = data.draw(st.sampled_from(path_names), "path name")
                path_values[name] = data.draw(hostile_query, "path id")
            path = op.path.format(**path_values)
            query = ""
            if query_names:
                name = data.draw(st.sampled_from(query_names), "query name")
                query = f"{name}={data.draw(hostile_query, 'query value')}"
            kwargs = {}
            if fields:
                name, is_object = data.draw(st.sampled_from(fields), "field")
                value = data.draw(hostile_value, "value")
                if is_object or data.draw(st.booleans(), "nest"):
                    value = {data.draw(st.one_of(st.just("k"), surrogates), "key"): value}
                kwargs = {"data": _encode({name: value}), "content_type": "application/json"}
            r = connect.client.open(path, method=op.method.upper(), query_string=query, headers=headers, **kwargs)
            statuses[r.status_code] += 1
            label = f"{op.method.upper()} {op.path} ?{query[:40]} {kwargs.get('data', b'')[:80]!r}"
            if r.status_code == 500:
                failures.append(f"{label}: 500")
            elif r.mimetype == "application/json" and r.data:
                try:
                    _strict(r.data)
                except ValueError as exc:
                    failures.append(f"{label}: response is not strict JSON ({exc})")

        run()

    reads = [("/v1/apps", connect.auth), ("/v1/connections", connect.auth), ("/v1/credentials", connect.auth),
             (f"/v1/apps/{seeded['app']['id']}/versions", connect.auth),
             ("/v1/connect/requirements/statuses", {"Authorization": f"Bearer {seeded['token']}"})]
    for path, headers in reads:
        r = connect.client.get(path, headers=headers)
        if r.status_code != 200:
            failures.append(f"after fuzzing, GET {path} answered {r.status_code}")
    with capsys.disabled():
        print(f"\nhostile input: {len(operations)} operations, {sum(statuses.values())} requests, "
              f"{len(failures)} failures; statuses {dict(sorted(statuses.items()))}")
        for failure in failures[:20]:
            print("---", failure)
    assert not failures, f"{len(failures)} hostile-input failures (see output)"

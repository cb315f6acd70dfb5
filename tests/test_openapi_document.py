"""The served OpenAPI document is a contract a client can generate from (issue 14).

Every operation has a unique verb-first operationId and a tag, its security,
and each error status it can return with the Error schema and an example;
answers mark always-present fields required and nullable ones nullable;
PATCH bodies are partial; timestamps are date-time. That the service keeps
to the document is checked on every response the suite sees
(``connect_service.testing.ContractClient``); the tests below check the
document itself, and a deliberately wrong answer shows the checker bites.
"""
from __future__ import annotations

import pathlib
import re

import pytest
from openapi_spec_validator import validate

from connect_service import errors, proxy
from connect_service.fields import NO_NUL, NON_BLANK
from connect_service.testing import check_response

VERBS = ("create", "list", "get", "update", "delete", "revoke", "deploy", "submit", "start", "initialise",
         "complete", "receive", "refuse", "check", "rotate", "retry", "proxy")
OPERATION_ID = re.compile(rf"^({'|'.join(VERBS)})[A-Z][A-Za-z0-9]*$")
METHODS = ("get", "post", "put", "patch", "delete")
#: response fields that are legitimately absent from some answers
OPTIONAL = {
    "AccessKey": {"key"},  # the plaintext: only in the create answer
    "App": {"user_verification_secret"},  # only in the answer that generated it
    "Connection": {"metadata"},  # seed 002 lists it as optional
    "ConnectionType": {"description", "connector_name"},
    "FormField": {"help", "placeholder", "choices", "default", "min", "max", "max_length"},
    "ErrorDetail": {"details"},  # only when there is something to say
    "WebhookEndpoint": {"secret"},  # only in the answer that created or rotated it
}


@pytest.fixture
def document(connect):
    return connect.client.get("/openapi.json").get_json()


def operations(document):
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def referenced(document, schema, seen):
    """Names of every component schema reachable from ``schema``."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if ref:
            name = ref.rsplit("/", 1)[-1]
            if name not in seen:
                seen.add(name)
                referenced(document, document["components"]["schemas"][name], seen)
        for value in schema.values():
            referenced(document, value, seen)
    elif isinstance(schema, list):
        for value in schema:
            referenced(document, value, seen)
    return seen


def test_document_is_valid_openapi(document):
    validate(document)
    assert document["openapi"].startswith("3.1")


def test_every_operation_has_a_unique_verb_first_id_and_a_tag(document):
    ids = []
    for path, method, op in operations(document):
        assert OPERATION_ID.match(op.get("operationId", "")), f"{method.upper()} {path}: {op.get('operationId')!r}"
        assert op.get("tags"), f"{method.upper()} {path} has no tag"
        ids.append(op["operationId"])
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    expected = {"createConnectToken", "listRequirements", "getRequirementStatuses", "submitCredentials",
                "startOAuth2Authorization", "initialiseOAuth2", "createConnection",
                # operations added after the contract: webhooks, audit, proxy, token revocation, user verification,
                # per-credential callbacks and start links
                "createWebhookEndpoint", "listWebhookEndpoints", "getWebhookEndpoint", "deleteWebhookEndpoint",
                "rotateWebhookEndpointSecret", "listWebhookDeliveries", "retryWebhookDelivery", "listAuditEvents",
                "proxyGet", "proxyPost", "proxyPut", "proxyPatch", "proxyDelete", "revokeUserTokens",
                "rotateUserVerificationSecret", "completeOAuth2Callback", "startCredentialAuthorization"}
    assert expected <= set(ids)


#: the proxy passes the provider's answers through: every status is free-form (ranges), never the Error schema alone
PROXY = "/v1/connections/{conn_id}/proxy/{path}"


def test_every_operation_declares_its_errors_with_the_error_schema_and_an_example(document):
    for path, method, op in operations(document):
        label = f"{method.upper()} {path}"
        responses = op["responses"]
        if path == PROXY:
            assert {"2XX", "4XX", "5XX", "404", "503"} <= set(responses) and "default" not in responses, label
            assert all(r["content"] == {"*/*": {"schema": {}}} for r in responses.values()), label
            assert op["security"] == [{"accessKey": []}], label
            continue
        assert "default" not in responses, label
        assert {"404", "503"} <= set(responses), label
        if "requestBody" in op:
            assert {"400", "413", "415"} <= set(responses), label
        if op.get("security"):
            assert "401" in responses, label
        for status, response in responses.items():
            if int(status) < 400:
                continue
            content = response["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/Error"}, (label, status)
            if "example" in content:
                assert content["example"]["error"]["code"], (label, status)
            else:
                assert path in ("/v1/connect/oauth2/callback/{credential_id}", "/v1/connect/oauth2/start/{signed}"), (
                    label, status)


def test_seed_examples_are_the_documented_errors(document):
    op = document["paths"]["/v1/connect/requirements/{requirement_id}/credentials"]["post"]
    examples = {s: r["content"]["application/json"]["example"] for s, r in op["responses"].items() if int(s) >= 400}
    assert examples["400"] == {"error": {"code": "bad_request", "message": "Bad Request",
                                         "details": {"input": "cannot be blank"}}}
    assert examples["401"] == {"error": {"code": "unauthorized", "message": "Unauthorized"}}
    assert examples["404"] == {"error": {"code": "not_found", "message": "Not Found"}}


def test_answers_mark_every_always_present_field_required(document):
    answers: set[str] = set()
    for _, _, op in operations(document):
        for status, response in op["responses"].items():
            referenced(document, response.get("content", {}), answers)
    assert {"App", "Version", "AccessKey", "CredentialOut", "Connection", "Token", "Requirement"} <= answers
    for name in sorted(answers):
        schema = document["components"]["schemas"][name]
        if "properties" not in schema:
            continue
        missing = set(schema["properties"]) - set(schema.get("required", [])) - OPTIONAL.get(name, set())
        assert not missing, f"{name}: {sorted(missing)} not required"


def test_seed_002_connection_fields(document):
    schema = document["components"]["schemas"]["Connection"]
    required = {"id", "customer_id", "connector_config_id", "integration_id", "created_at", "updated_at",
                "display_name", "disabled", "connector_name", "settings"}
    assert required <= set(schema["required"])
    props = schema["properties"]
    for name in ("customer_id", "integration_id", "display_name", "disabled"):
        assert "null" in props[name]["type"], name
    assert props["id"]["type"] == "string" and props["connector_name"]["type"] == "string"


def test_patch_bodies_are_partial_and_timestamps_are_date_time(document):
    schemas = document["components"]["schemas"]
    for path, method, op in operations(document):
        if method == "patch" and path != PROXY:  # the proxy forwards any body as sent
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
            assert not schemas[ref].get("required"), f"PATCH {path}: {ref} requires {schemas[ref]['required']}"
    stamps = 0
    for name, schema in schemas.items():
        for prop, spec in schema.get("properties", {}).items():
            if prop.endswith("_at"):
                assert spec.get("format") == "date-time", f"{name}.{prop}"
                stamps += 1
    assert stamps >= 10


def test_smaller_schema_faults(document):
    schemas = document["components"]["schemas"]
    assert "PaginationMetadata" not in schemas
    assert schemas["Requirement"]["properties"]["spec"] == {"$ref": "#/components/schemas/Spec"}
    for name, schema in schemas.items():
        for prop, spec in schema.get("properties", {}).items():
            if None in spec.get("enum", []):
                assert "type" not in spec, f"{name}.{prop}: a nullable enum with a type generates duplicate classes"


def test_connect_token_creation_needs_no_security_scheme(document):
    op = document["paths"]["/v1/connect/tokens"]["post"]
    assert op["security"] == []
    assert "Access Key" in op["description"] and "public" in op["description"].lower()
    types = document["paths"]["/v1/connection-types"]["get"]
    assert types["security"] == [{"accessKey": []}]


def test_the_contract_checker_rejects_an_answer_the_document_does_not_allow(connect):
    """A response missing a required field, and one with an undeclared status, both fail."""
    app = connect.create_app()
    ok = connect.client.get(f"/v1/apps/{app['id']}", headers=connect.auth)
    ok.set_data(ok.get_data().replace(b'"slug"', b'"slog"'))
    with pytest.raises(AssertionError, match="outside its OpenAPI contract"):
        check_response(connect.app, ok)
    ok = connect.client.get(f"/v1/apps/{app['id']}", headers=connect.auth)
    ok.status_code = 418
    with pytest.raises(AssertionError, match="outside its OpenAPI contract"):
        check_response(connect.app, ok)


def test_docs_table_lists_each_providers_default_prompt(connect):
    """docs/api.md's table of default prompts and offline access agrees with the provider plugins."""
    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    rows = dict(re.findall(r"^\s*\| `(\w+)`(?: \(generic\))? \| `(\w+)` \|", text, re.MULTILINE))
    providers = {cls.connector_name: cls.provider for cls in connect.registry.types.values()
                 if cls.auth == "oauth2" and cls.provider is not None and cls.connector_name in
                 {"box", "dropbox", "github", "google", "microsoft", "notion", "oauth2"}}
    assert len(providers) == 7
    assert rows == {name: p.default_prompt for name, p in providers.items()}
    assert rows["google"] == "consent" and {v for k, v in rows.items() if k != "google"} == {"login"}


# --- issue 17: the request side declares what the validators enforce ---------------------------------------


def _path_with_ids(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: "1" if m.group(1) == "number" else "x", path)


def test_unknown_methods_are_405_with_allow_on_every_documented_path(connect, document):
    for path, item in document["paths"].items():
        documented = {m.upper() for m in METHODS if m in item}
        for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE", "TRACE"} - documented):
            r = connect.client.open(_path_with_ids(path), method=method, headers=connect.auth)
            assert r.status_code == 405, (method, path, r.status_code)
            assert documented <= set(r.headers["Allow"].split(", ")), (method, path, r.headers["Allow"])
            assert r.get_json() == {"error": {"code": "method_not_allowed", "message": "Method Not Allowed"}}


def _props(document, name):
    return document["components"]["schemas"][name]["properties"]


def test_non_blank_strings_urls_and_hostnames_declare_their_rules(document):
    assert _props(document, "AppCreate")["name"]["minLength"] == 1
    assert _props(document, "AppCreate")["name"]["pattern"] == NON_BLANK
    for name in ("connector_name", "oauth_client_id", "name"):
        assert _props(document, "Credential")[name]["pattern"] == NON_BLANK, name
    assert _props(document, "ConnectionCreate")["connector_config_id"]["pattern"] == NON_BLANK
    assert _props(document, "TokenCreate")["user_id"]["pattern"] == NON_BLANK
    url = _props(document, "AppCreate")["frame_ancestors"]["items"]
    assert url["format"] == "uri" and url["pattern"].startswith("^[Hh][Tt][Tt][Pp][Ss]?://")
    assert _props(document, "CheckHost")["url"]["format"] == "uri"
    assert re.match(_props(document, "AppCreate")["hostname"]["pattern"], "helpdesk.example.com")
    assert not re.match(_props(document, "AppCreate")["hostname"]["pattern"], "10.0.0.1")
    # every other request string refuses NUL characters, as the body parser does
    assert _props(document, "Credential")["description"]["pattern"] == NO_NUL
    # a body is never {}: the blank-body rule
    for name in ("AppCreate", "AppPatch", "AccessKeyCreate", "ConnectionPatch", "CredentialPatch", "TokenCreate"):
        assert document["components"]["schemas"][name]["minProperties"] == 1, name


def test_list_parameters_declare_cursor_patterns_and_limits(connect, document):
    app = connect.create_app()
    connect.create_app()
    connect.deploy(app, [])
    connect.deploy(app, [])
    assert connect.client.post("/v1/access-keys", json={"name": "second"}, headers=connect.auth).status_code == 201
    for name in ("one", "two"):
        r = connect.client.post("/v1/credentials", headers=connect.auth, json={
            "name": name, "connector_name": "oauth2", "oauth_url": "https://idp.example.com/auth",
            "oauth_token_url": "https://idp.example.com/token", "oauth_client_id": "c", "oauth_client_secret": "s"})
        assert r.status_code == 201, r.get_json()
    keyset = None
    for path in ("/v1/apps", "/v1/access-keys", "/v1/credentials", "/v1/connections", "/v1/connection-types",
                 "/v1/apps/{app_id}/versions", "/v1/audit-events"):
        params = {p["name"]: p["schema"] for p in document["paths"][path]["get"]["parameters"] if p["in"] == "query"}
        assert params["limit"]["minimum"] == 1 and params["limit"]["maximum"] == 200, path
        pattern = params["cursor"]["pattern"]
        if path in ("/v1/connections", "/v1/audit-events"):  # the same keyset cursor as the other lists of rows
            assert pattern == keyset
        if path == "/v1/connections":
            assert pattern == keyset
            continue
        keyset = keyset or pattern
        # a cursor the service hands out matches its documented pattern, and one that does not is a 400
        concrete = path.replace("{app_id}", app["id"])
        body = connect.client.get(concrete, query_string={"limit": 1}, headers=connect.auth).get_json()
        assert body["next_cursor"] and re.match(pattern, body["next_cursor"]), (path, pattern, body["next_cursor"])
        r = connect.client.get(concrete, query_string={"limit": 1, "cursor": body["next_cursor"]}, headers=connect.auth)
        assert r.status_code == 200 and r.get_json()["data"] != body["data"], path
        r = connect.client.get(concrete, query_string={"cursor": "!!"}, headers=connect.auth)
        assert r.status_code == 400 and r.get_json()["error"]["details"] == {"cursor": "is not a valid cursor"}, path


def test_the_proxy_path_pattern_is_what_the_proxy_accepts(document):
    """The documented ``path`` pattern and the proxy's own check agree on every sample (found while converting)."""
    for method in ("get", "post", "put", "patch", "delete"):
        declared = [p for p in document["paths"][PROXY][method]["parameters"] if p["name"] == "path"]
        assert declared[0]["schema"]["pattern"] == proxy.PATH_PATTERN, method
    pattern = proxy.PATH_PATTERN
    assert pattern == proxy.PATH_PATTERN
    samples = ["a", "a/b", "a//b", "a/", ".a", "..a", "a/.b/..c/...", "...", ".", "..", "a/.", "a/../b", "./a",
               "a\\b", "a/./b", "tickets/1.json", ".well-known/x"]
    for sample in samples:
        try:
            proxy._url("https://h.example.com", sample, [])
            accepted = True
        except errors.BadRequest:
            accepted = False
        assert bool(re.match(pattern, sample)) == accepted, sample


def test_non_blank_pattern_refuses_what_the_field_calls_blank_under_any_regex_reading():
    """Found by the conformance run: ``\\s`` read as ASCII (as schemathesis reads patterns) let ``"\\x1e"`` through,
    which ``NonBlank`` refuses as blank; the pattern now spells the whitespace out."""
    blanks = [chr(c) for c in range(0x110000) if chr(c).isspace()]
    for flags in (0, re.ASCII):
        for c in blanks:
            assert not re.match(NON_BLANK, c, flags), (hex(ord(c)), flags)
            assert not re.match(NON_BLANK, f"{c} {c}", flags), (hex(ord(c)), flags)
        assert re.match(NON_BLANK, " x ", flags) and re.match(NON_BLANK, "😀", flags)

"""schemathesis with every check (``--checks all``) over the whole document, as an org and as an end user (issue 17).

Each operation gets ``CONNECT_CONFORMANCE_EXAMPLES`` (default 25) positive and
as many negative examples, derandomized, once with the org's Access Key and
once with an end user's connect token on every request (the token endpoint is
called on the app's hostname). Every registered check runs, among them
``positive_data_acceptance`` (a request the document allows is not refused
with 400), ``negative_data_rejection``, ``unsupported_method`` (405 with
``Allow``), ``ignored_auth`` and the response conformance checks. Path ids are
mostly the seeded objects so bodies get judged rather than 404'd. Any failure
fails the test; the groups are printed (``-s``). It runs on the suite's
database, so on SQLite and on PostgreSQL (``CONNECT_TEST_DATABASE_URL``).
"""
from __future__ import annotations

import os
import re
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks

from connect_service import strict_json
from tests.support.fuzz_checks import upstream_failures_are_not_server_errors
from tests.test_fuzz import loopback_dns_only, real_ids, seeded  # noqa: F401,F811  (fixtures)

EXAMPLES = int(os.environ.get("CONNECT_CONFORMANCE_EXAMPLES", "25"))

#: 400s no schema can foretell: the rule depends on stored state, the plugin registry or the operator's settings.
#: A schema-valid request may be refused only for these fields (a regular expression over ``details`` keys);
#: a 400 for any other field is a rule the document fails to declare.
STATE_RULES = {
    # requirement types come from the plugin registry; spec.type must equal type; keys are unique per version
    "POST /v1/apps/{app_id}/versions": r"requirements\.\d+\.(key|type|spec(\..+)?)",
    # what a connector needs depends on the connector (plugin) and the other fields; apps, slugs and the live
    # credential must exist in the org; plain http is allowed only for the operator's private hosts
    "POST /v1/credentials": r"oauth_url|oauth_token_url|oauth_client_id|oauth_client_secret|oauth_issuer"
                            r"|oauth_token_endpoint_auth_method|connector_name|settings(\..+)?|app_id|team_id"
                            r"|read_access|shared_app_slugs(\.\d+)?|shared_team_slugs|live_credential_id|token_endpoint"
                            r"|allowed_hosts\.\d+",  # a wildcard over a public suffix (the public-suffix list)
    "PATCH /v1/credentials/{credential_id}": r"oauth_url|oauth_token_url|oauth_client_id|oauth_client_secret"
                                             r"|oauth_issuer|oauth_token_endpoint_auth_method|connector_name"
                                             r"|settings(\..+)?|app_id|team_id|read_access|shared_app_slugs(\.\d+)?"
                                             r"|shared_team_slugs|live_credential_id|token_endpoint"
                                             r"|allowed_hosts\.\d+",
    # the credential must be the org's and serve the connector; the config is judged by the connection type
    "POST /v1/connections": r"connector_config_id|app_id|data\.connector_name|data\.settings(\..+)?|customer_id",
    # the credential, app and connector must match what is stored
    "POST /v1/embed/{hub_id}/connector/{connector_id}/oauth2/initialise":
        r"authorizeUrl|clientId|credential(\..+)?|additionalParams|customerId|scopes",
    # the submitted type must be the requirement's; its config is judged by that type's plugin schema
    "POST /v1/connect/requirements/{requirement_id}/credentials": r"type|config(\..+)?|input",
    # return_to must be one of the app's return_urls
    "POST /v1/connect/requirements/{requirement_id}/oauth2/authorize": r"return_to|input",
    # ... and an account link needs a credential of the platform available to the app
    # (and the app's setup must be complete: a credential of the platform usable by the app)
    "POST /v1/connect/requirements/{requirement_id}/accounts": r"return_to|input|credential|requirement",
    # not stored state, but no portable pattern: user_display refuses Unicode format (Cf) and unassigned (Cn)
    # characters, which depend on the server's Unicode database; the pattern declares the rest
    "POST /v1/connect/tokens": r"user_display",
    # the webhook body is judged by the platform's plugin
    "POST /v1/connect/webhooks/{connector}/{signed}": r".+",
    # app_id must be an app of the organization
    "POST /v1/webhook-endpoints": r"app_id",
    # browser pages: the state / signed link is judged against what the service stored (an HTML page answers)
    "GET /v1/connect/oauth2/callback/{credential_id}": "*",
    "GET /v1/connect/oauth2/start/{signed}": "*",
}


#: strict JSON's limits that hold inside free-form objects too (``metadata``, ``settings``, ``spec.data``), where no
#: schema can spell them out; docs/api.md states them (the strings' rules are in every pattern)
FREE_FORM_LIMITS = {strict_json.BAD_NUMBER, strict_json.TOO_DEEP}


def state_rules_only(ctx, response, case):
    """``positive_data_acceptance``, except for the :data:`STATE_RULES` a schema cannot express."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return None
    allowed = STATE_RULES.get(case.operation.label)
    if allowed == "*":
        return None
    try:
        details = (response.json().get("error") or {}).get("details") or {}
    except ValueError:
        details = {}
    unexplained = [key for key, message in details.items()
                   if not (allowed and re.fullmatch(allowed, key)) and message not in FREE_FORM_LIMITS]
    if unexplained or not details:
        raise AssertionError(f"Schema-valid request rejected with 400 for {unexplained or 'no named field'}: "
                             f"{str(details)[:300]}")
    return None


#: the checks replaced by a narrower one above
NARROWED = {"positive_data_acceptance", "not_a_server_error"}


def all_checks():
    """Every registered check (``--checks all``), with ``positive_data_acceptance`` narrowed by STATE_RULES and
    ``not_a_server_error`` by the documented upstream 502."""
    load_all_checks()
    return [c for c in CHECKS.get_all() if getattr(c, "__name__", "") not in NARROWED] + [
        state_rules_only, upstream_failures_are_not_server_errors]


def run_operation(op, mode, headers, seeded, calls, statuses, failures, checks):  # noqa: F811
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case):
        key = (op.label, mode.value)
        calls[key] += 1
        if mode is GenerationMode.POSITIVE and op.method.upper() != "DELETE" and calls[key] % 4:
            for name, value in real_ids(op.path, seeded).items():
                if case.path_parameters and name in case.path_parameters:
                    case.path_parameters[name] = value
        try:
            response = case.call_and_validate(headers=dict(headers), checks=checks)
            statuses[response.status_code] += 1
        except (Exception, BaseExceptionGroup) as exc:  # a failed check: record it, keep going, fail at the end
            failures.append((op.label, mode.value, str(exc)[:1500]))
            statuses["failed"] += 1

    try:
        run()
    except Unsatisfiable:  # nothing to negate (no parameters and no body)
        assert mode is GenerationMode.NEGATIVE, op.label


@pytest.mark.parametrize("identity", ["org", "end_user"])
def test_every_operation_conforms_with_all_checks(identity, connect, seeded, loopback_dns_only, capsys):  # noqa: F811
    schema = schemathesis.openapi.from_wsgi("/openapi.json", connect.app)
    schema.config.generation.update(with_security_parameters=False)
    credential = connect.access_key if identity == "org" else seeded["token"]
    checks = all_checks()
    failures: list[tuple[str, str, str]] = []
    calls: Counter = Counter()
    statuses: Counter = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    for op in operations:
        headers = {"Authorization": f"Bearer {credential}"}
        if op.path == "/v1/connect/tokens":
            headers["Host"] = seeded["app"]["hostname"]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run_operation(op, mode, headers, seeded, calls, statuses, failures, checks)
    with capsys.disabled():
        print(f"\nschemathesis as {identity}: {len(operations)} operations, {sum(calls.values())} examples, "
              f"{len(checks)} checks, {len(failures)} failures; statuses {dict(sorted(statuses.items(), key=str))}")
        groups: dict[tuple, list[str]] = {}
        for label, mode, text in failures:
            kinds = tuple(sorted({line.strip() for line in text.splitlines() if line.startswith("- ")}))
            groups.setdefault((label, mode, kinds), []).append(text)
        for (label, mode, kinds), texts in groups.items():
            print(f"--- {label} [{mode}] x{len(texts)}: {'; '.join(kinds)}\n{texts[0]}")
    assert len(operations) >= 30
    assert len(checks) >= 12
    assert not failures, f"{len(failures)} conformance failures (see output)"

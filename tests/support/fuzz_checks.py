"""schemathesis checks shared by the fuzz and conformance passes."""
from __future__ import annotations

from schemathesis.checks import not_a_server_error


def upstream_failures_are_not_server_errors(ctx, response, case):
    """``not_a_server_error``, except a documented 502 ``bad_gateway``: the provider (here, a host the test's DNS
    does not resolve, as the proxy meets it) failed, not the service, and the answer says so in the error shape."""
    responses = case.operation.definition.raw.get("responses", {})
    if response.status_code == 502 and ({"502", "5XX"} & set(responses)):
        try:
            code = (response.json().get("error") or {}).get("code")
        except ValueError:
            code = None
        if code == "bad_gateway":
            return None
    return not_a_server_error(ctx, response, case)

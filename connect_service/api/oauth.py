"""OAuth2 endpoints: start (connect token), callback (state), credential start URL, embed initialise.

The flow logic lives in :mod:`connect_service.oauth`; these views only
authenticate, validate input and turn outcomes into responses (a JSON body,
or a page and redirect for the browser-facing ones).
"""
from __future__ import annotations

import functools
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import marshmallow as ma
from flask import g, make_response, redirect, render_template, request
from flask.views import MethodView

from .. import errors, oauth
from ..auth import require_access_key, require_connect_token
from ..fields import HTTP_URL, NonBlank
from . import Blueprint
from .openapi import ACCESS_KEY, CONNECT_TOKEN, PUBLIC

blp = Blueprint("oauth", __name__, url_prefix="/v1", description="OAuth2 connections",
                template_folder="../web/templates")

#: response headers of every browser-facing page of the flow: the callback URL carries the code
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


# --------------------------------------------------------------------------- result page / redirect


def _with_query(url: str, extra: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in extra]
    query.extend(extra.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def _page(ok: bool, message: str, status: int, code: str | None = None):
    """The result page; a client that asks for JSON (``Accept: application/json``) gets the error shape.

    There ``details.error`` carries ``code``, the OAuth error code (e.g. ``invalid_state``) that a
    redirect would send as ``?error=``; ``error.code`` stays the HTTP reason (``bad_request``).
    """
    wants_json = request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json"
    if not ok and wants_json:
        return errors.error_response(status, {"input": message, **({"error": code} if code else {})})
    resp = make_response(render_template("oauth_result.html", ok=ok, message=message), status)
    resp.headers.update(PAGE_HEADERS)
    return resp


def _finish(outcome: oauth.CallbackOutcome):
    if outcome.return_to:
        extra = {"status": "success" if outcome.ok else "error"}
        conn = outcome.connection
        if conn is not None:
            if conn.requirement_id:
                extra["requirement_id"] = conn.requirement_id
            extra["connection_id"] = conn.id
        if not outcome.ok and outcome.error_code:
            extra["error"] = outcome.error_code
        resp = redirect(_with_query(outcome.return_to, extra), 303)
        resp.headers.update({"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
    else:
        resp = _page(outcome.ok, outcome.message, outcome.http_status, outcome.error_code)
    return resp


# --------------------------------------------------------------------------- endpoints


class AuthorizeQuerySchema(ma.Schema):
    return_to = ma.fields.String(metadata={"description": "exactly one of the app's return_urls"})


class AuthorizeResponseSchema(ma.Schema):
    authorization_url = ma.fields.String(required=True)
    connection_id = ma.fields.String(required=True)


@blp.route("/connect/requirements/<string:requirement_id>/oauth2/authorize")
class Authorize(MethodView):
    decorators = [require_connect_token]

    @blp.operation("startOAuth2Authorization", 400, 401, 404, 409, 429, security=CONNECT_TOKEN, parameters=[
        {"in": "query", "name": "return_to", "schema": {"type": "string", "format": "uri", "pattern": HTTP_URL},
         "description": "exactly one of the app's return_urls"}])
    @blp.response(201, AuthorizeResponseSchema)
    def post(self, requirement_id):
        """Start OAuth2 for a requirement: a pending connection and the authorization URL"""
        started = oauth.start_for_requirement(g.app, g.connect.user_id, requirement_id,
                                              return_to=request.args.get("return_to"))
        return {"authorization_url": started.url, "connection_id": started.connection.id}


def _page_response(description: str) -> dict:
    """OpenAPI: a browser-facing answer is the HTML result page (the error shape for ``Accept: application/json``)."""
    return {"description": description, "content": {
        "text/html": {"schema": {"type": "string"}},
        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


@blp.route("/connect/oauth2/callback/<string:credential_id>")
class Callback(MethodView):
    @blp.doc(responses={"200": {"description": "the result page", "content": {"text/html": {"schema": {"type": "string"}}}},
                        "303": {"description": "redirect to the flow's return URL"},
                        "400": _page_response("the result page naming the problem")})
    @blp.operation("completeOAuth2Callback", security=PUBLIC, parameters=[
        {"in": "query", "name": name, "schema": {"type": "string"}} for name in
        ("state", "code", "error", "error_description", "iss")])
    @blp.response(200, description="the result page, or a 303 redirect to the flow's return URL")
    def get(self, credential_id):
        """OAuth2 redirect target of one credential (its redirect_uri): checks state, exchanges the code"""
        params = request.args.to_dict(flat=True)
        # each flow has its own binding cookie, named after its state: parallel flows never collide
        cookie = oauth.nonce_cookie_name(params["state"]) if params.get("state") else None
        nonce = request.cookies.get(cookie) if cookie else None
        outcome = oauth.complete_authorization(params, credential_id=credential_id, browser_nonce=nonce)
        resp = _finish(outcome)
        if nonce is not None and outcome.error_code != "browser_mismatch":
            resp.delete_cookie(cookie, path=oauth.CALLBACK_PATH, httponly=True, samesite="Lax")
        return resp


@blp.route("/connect/oauth2/start/<string:signed>")
class CredentialStart(MethodView):
    @blp.operation("startCredentialAuthorization", security=PUBLIC, responses={
        "400": _page_response("the link is invalid or expired, or cannot start"),
        "404": _page_response("the credential is gone or does not use authorization_code")})
    @blp.response(303, description="redirect to the provider's authorization page")
    def get(self, signed):
        """Start the org-level authorization of a credential (its signed ``redirect_url``)"""
        try:
            started, nonce = oauth.start_from_link(signed)
        except oauth.StartRefused as exc:
            return _page(False, exc.message, exc.status)
        resp = redirect(started.url, 303)
        resp.headers.update({"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
        oauth.set_nonce_cookie(resp, started.nonce_cookie, nonce)
        return resp


class EmbedCredentialSchema(ma.Schema):
    id = NonBlank(required=True)
    organisationId = NonBlank(required=True)


class InitialiseSchema(ma.Schema):
    authorizeUrl = NonBlank(required=True, metadata={"description": "must equal the credential's authorize URL"})
    clientId = NonBlank(required=True, metadata={"description": "must equal the credential's client id"})
    credential = ma.fields.Nested(EmbedCredentialSchema, required=True)
    additionalParams = ma.fields.String(allow_none=True)
    disableOfflineAccess = ma.fields.Boolean(load_default=False)
    prompt = ma.fields.String(allow_none=True)
    scopes = ma.fields.List(ma.fields.String(), allow_none=True)
    customerId = ma.fields.String(allow_none=True, validate=ma.validate.Length(min=1, max=200))


class InitialiseResponseSchema(ma.Schema):
    url = ma.fields.String(required=True)


def _resolve_embed_target(view):
    """Turn ``hub_id`` + ``connector_id`` into ``target`` before the body is judged (unknown path: 404)."""
    @functools.wraps(view)
    def wrapper(*args, hub_id, connector_id, **kwargs):
        return view(*args, target=oauth.embed_target(g.org.id, hub_id, connector_id), **kwargs)
    return wrapper


@blp.route("/embed/<string:hub_id>/connector/<string:connector_id>/oauth2/initialise")
class Initialise(MethodView):
    decorators = [_resolve_embed_target, require_access_key]

    @blp.operation("initialiseOAuth2", 400, 401, 404, 413, 415, security=ACCESS_KEY)
    @blp.arguments(InitialiseSchema)
    @blp.response(200, InitialiseResponseSchema)
    def post(self, data, target):
        """Initialise an OAuth2 connection (seed 004): the URL to send the user to"""
        return {"url": oauth.initialise(target, data).url}

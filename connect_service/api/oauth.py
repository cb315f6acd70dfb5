"""OAuth2 endpoints: start (connect token), callback (state), credential start URL, embed initialise.

The flow logic lives in :mod:`connect_service.oauth`; these views only
authenticate, validate input and turn outcomes into responses.
"""
from __future__ import annotations

import secrets
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import marshmallow as ma
from flask import g, make_response, redirect, render_template, request
from flask.views import MethodView
from . import Blueprint
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from .. import errors, oauth
from ..fields import NonBlank
from ..models import App, Credential
from ..requirements import find_requirement
from .common import load_body, registry, require_access_key, require_connect_token, settings

blp = Blueprint("oauth", __name__, url_prefix="/v1", description="OAuth2 connections",
                template_folder="../web/templates")

TOKEN_SECURITY = [{"connectToken": []}]
KEY_SECURITY = [{"accessKey": []}]
#: how long a credential's signed ``redirect_url`` stays valid (a fresh one comes with every read)
START_URL_MAX_AGE = 24 * 3600
START_SALT = "connect-service.oauth2-start"
#: response headers of every browser-facing page of the flow: the callback URL carries the code
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


# --------------------------------------------------------------------------- signed start URL


def _serializer() -> URLSafeTimedSerializer:
    cfg = settings()
    # itsdangerous signs with the last key and verifies with all of them (rotation).
    keys = [*cfg.get("secret_key_fallbacks", []), cfg["secret_key"]]
    return URLSafeTimedSerializer(keys, salt=START_SALT)


def credential_start_url(credential: Credential) -> str:
    """A signed, expiring URL of this service that starts the credential's org-level authorization."""
    value = _serializer().dumps({"credential": credential.id, "org": credential.org_id})
    return f"{settings()['public_url']}/v1/connect/oauth2/start/{value}"


# --------------------------------------------------------------------------- result page / redirect


def _with_query(url: str, extra: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in extra]
    query.extend(extra.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def _page(ok: bool, message: str, status: int):
    """The result page; a client that asks for JSON (``Accept: application/json``) gets the error shape."""
    wants_json = request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json"
    if not ok and wants_json:
        return errors.error_response(status, {"input": message})
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
        resp = _page(outcome.ok, outcome.message, outcome.http_status)
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

    @blp.doc(security=TOKEN_SECURITY, parameters=[{"in": "query", "name": "return_to", "schema": {"type": "string"},
                                                   "description": "exactly one of the app's return_urls"}])
    @blp.response(201, AuthorizeResponseSchema)
    def post(self, requirement_id):
        """Start OAuth2 for a requirement: a pending connection and the authorization URL"""
        req = find_requirement(g.app, requirement_id)
        return_to = request.args.get("return_to")
        if return_to is not None and not oauth.is_exact_return_url(g.app, return_to):
            raise errors.BadRequest({"return_to": "must exactly match one of the app's return_urls"})
        started = oauth.start_authorization(g.app, g.connect.user_id, req, return_to=return_to)
        return {"authorization_url": started.url, "connection_id": started.connection.id}


def _page_response(description: str) -> dict:
    """OpenAPI: a browser-facing answer is the HTML result page (the error shape for ``Accept: application/json``)."""
    return {"description": description, "content": {
        "text/html": {"schema": {"type": "string"}},
        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


@blp.route("/connect/oauth2/callback")
class Callback(MethodView):
    @blp.doc(responses={"200": {"description": "the result page", "content": {"text/html": {"schema": {"type": "string"}}}},
                        "303": {"description": "redirect to the flow's return URL"},
                        "400": _page_response("the result page naming the problem")})
    @blp.doc(security=[], parameters=[
        {"in": "query", "name": name, "schema": {"type": "string"}} for name in
        ("state", "code", "error", "error_description", "iss")])
    @blp.response(200, description="the result page, or a 303 redirect to the flow's return URL")
    def get(self):
        """OAuth2 redirect target: validates state, exchanges the code, stores the tokens"""
        params = request.args.to_dict(flat=True)
        # each flow has its own binding cookie, named after its state: parallel flows never collide
        cookie = oauth.nonce_cookie_name(params["state"]) if params.get("state") else None
        nonce = request.cookies.get(cookie) if cookie else None
        outcome = oauth.complete_authorization(params, browser_nonce=nonce)
        resp = _finish(outcome)
        if nonce is not None and outcome.error_code != "browser_mismatch":
            resp.delete_cookie(cookie, path=oauth.CALLBACK_PATH, httponly=True, samesite="Lax")
        return resp


@blp.route("/connect/oauth2/start/<string:signed>")
class CredentialStart(MethodView):
    @blp.doc(security=[], responses={"400": _page_response("the link is invalid or expired, or cannot start"),
                                     "404": _page_response("the credential is gone or does not use authorization_code")})
    @blp.response(303, description="redirect to the provider's authorization page")
    def get(self, signed):
        """Start the org-level authorization of a credential (its signed ``redirect_url``)"""
        try:
            value = _serializer().loads(signed, max_age=START_URL_MAX_AGE)
        except SignatureExpired:
            return _page(False, "This link expired. Read the credential again for a fresh redirect_url.", 400)
        except BadSignature:
            return _page(False, "This link is not valid.", 400)
        credential = Credential.get_or_none(Credential.id == value.get("credential"),
                                            Credential.org == value.get("org"))
        if credential is None or credential.oauth_grant_type != "authorization_code":
            return _page(False, "This credential no longer exists or does not use authorization_code.", 404)
        cls = registry().by_connector(credential.connector_name)
        if cls is None:
            return _page(False, f"The connector {credential.connector_name} is not installed.", 400)
        try:
            conn = oauth.pending_connection_for(credential, cls, app=None, customer_id=None)
            nonce = secrets.token_urlsafe(32)
            started = oauth.begin_authorization(credential, conn, browser_nonce=nonce)
        except errors.APIError as exc:
            detail = "; ".join(f"{k} {v}" for k, v in (exc.details or {}).items()) or exc.message
            return _page(False, f"The credential cannot start a sign-in: {detail}", 400)
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


@blp.route("/embed/<string:hub_id>/connector/<string:connector_id>/oauth2/initialise")
class Initialise(MethodView):
    decorators = [require_access_key]

    @blp.doc(security=KEY_SECURITY, requestBody={"required": True, "content": {
        "application/json": {"schema": InitialiseSchema}}})
    @blp.response(200, InitialiseResponseSchema)
    def post(self, hub_id, connector_id):
        """Initialise an OAuth2 connection (seed 004): the URL to send the user to"""
        app = App.get_or_none(App.id == hub_id, App.org == g.org.id)
        cls = registry().by_connector(connector_id)
        if app is None or cls is None or cls.auth == "credentials":
            raise errors.NotFound()
        data = load_body(InitialiseSchema)
        ref = data["credential"]
        if ref["organisationId"] != g.org.id:
            raise errors.BadRequest({"credential.organisationId": "must be the id of your organization"})
        credential = Credential.get_or_none(Credential.id == ref["id"], Credential.org == g.org.id)
        if credential is None:
            raise errors.BadRequest({"credential.id": "is not a credential of this organization"})
        if credential.connector_name != connector_id:
            raise errors.BadRequest({"credential.id": f"serves connector {credential.connector_name!r}, "
                                                      f"not {connector_id!r}"})
        if credential.oauth_grant_type != "authorization_code":
            raise errors.BadRequest({"credential.id": "uses the client_credentials grant; "
                                                      "initialise needs authorization_code"})
        if not oauth.credential_available_to(credential, app):
            raise errors.BadRequest({"credential.id": "is not available to this app (see its read_access)"})
        provider = oauth.provider_for(credential)
        details = {}
        if data["authorizeUrl"] != provider.authorize_url:
            details["authorizeUrl"] = "must equal the credential's authorization URL"
        if data["clientId"] != credential.oauth_client_id:
            details["clientId"] = "must equal the credential's client id"
        if details:
            raise errors.BadRequest(details)
        options = {
            "scopes": [s for s in data["scopes"] if s.strip()] if data.get("scopes") is not None else None,
            "prompt": data.get("prompt"),
            "additional_params": data.get("additionalParams"),
            "disable_offline_access": bool(data.get("disableOfflineAccess")),
        }
        # Judge the URL options before anything is stored: a 400 leaves no pending connection.
        oauth.build_authorization_url(credential, state="x", redirect_uri=oauth.callback_url(),
                                      code_challenge=None, code_challenge_method=None, **options)
        conn = oauth.pending_connection_for(credential, cls, app=app, customer_id=data.get("customerId"))
        return_to = (app.return_urls or [None])[0]
        started = oauth.begin_authorization(credential, conn, return_to=return_to, **options)
        return {"url": started.url}

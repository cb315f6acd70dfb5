"""The hosted connect page through the Flask test client: cookie, redirects, headers, CSRF, errors."""
from __future__ import annotations

import datetime
import re
import uuid
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest

from connect_service import ActionAccountType, ConnectionType, OAuth2Provider, hookimpl
from connect_service.testing import make_config
from tests.conftest import HTTP_API_KEY

BASE = "http://connect.test"
HELPDESK = {"key": "helpdesk", "type": "connection", "title": "Helpdesk API key",
            "description": "Read-only access to your helpdesk tickets.",
            "spec": {"type": "connection", "data": {"type": HTTP_API_KEY}}}
WEBHOOK = {"key": "webhook", "type": "connection", "title": "Alert webhook",
           "spec": {"type": "connection", "data": {"type": "dynamiq.connections.Http"}}}
CRM = {"key": "crm", "type": "connection", "title": "CRM account",
       "spec": {"type": "connection", "data": {"type": "tests.page.OAuthCrm"}}}
LINKED = {"key": "mail", "type": "tests.page.Linker", "title": "Mail account",
          "spec": {"type": "tests.page.Linker", "data": {"app_slug": "mail"}}}


class OAuthCrm(ConnectionType):
    """An OAuth2 type served by credentials of connector ``pagecrm`` (URLs from the credential)."""

    name = "tests.page.OAuthCrm"
    title = "Test CRM"
    auth = "oauth2"
    connector_name = "pagecrm"
    provider = OAuth2Provider(offline_access=None)


class Linker(ActionAccountType):
    """An action-account type whose link page is at link.example.com (knobs: ``fail``, ``link_host``)."""

    name = "tests.page.Linker"
    title = "Test linker"
    connector_name = "pagelinker"
    link_origins = ("https://link.example.com",)
    calls: list = []
    fail: Exception | None = None  # raised by link_account when set
    link_host = "link.example.com"

    def link_account(self, ctx, *, webhook_uri, success_redirect_uri, error_redirect_uri):
        user_id = ctx.user_id
        Linker.calls.append({"user_id": user_id, "success": success_redirect_uri, "error": error_redirect_uri})
        if Linker.fail is not None:
            raise Linker.fail
        return {"connect_link_url": f"https://{Linker.link_host}/start?user={user_id}",
                "expires_at": "2030-01-01T00:00:00Z"}


class PagePlugin:
    @hookimpl
    def register_connection_types(self):
        return [OAuthCrm, Linker]


@pytest.fixture
def connect_plugins():
    return [PagePlugin()]


@pytest.fixture(autouse=True)
def _reset_linker():
    Linker.calls, Linker.fail, Linker.link_host = [], None, "link.example.com"
    yield
    Linker.calls, Linker.fail, Linker.link_host = [], None, "link.example.com"


@pytest.fixture
def connect_config(tmp_path, request):
    return make_config(tmp_path, **getattr(request, "param", {}))


# --- helpers ----------------------------------------------------------------------------------

def rid(app, key):
    return str(uuid.uuid5(uuid.UUID(app["id"]), key))


def open_page(connect, app, user="user-1", client=None):
    """Follow a connect_url like a browser: returns (client, page path, token)."""
    client = client or connect.app.test_client()
    token = connect.token(app, user)
    r = client.get(f"/connect?token={token}", base_url=BASE)
    assert r.status_code == 303, r.get_data(as_text=True)
    return client, r.headers["Location"], token


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([0-9a-f]+)"', html).group(1)


def card_html(html: str, req_id: str) -> str:
    start = html.index(f'id="req-{req_id}"')
    end = html.find("</section>", start)
    return html[start:end]


def visible_text(html: str) -> str:
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", html, flags=re.S)
    return unescape(re.sub(r"<[^>]+>", " ", body))


def post_form(client, path, data, **headers):
    return client.post(path, data=data, base_url=BASE, headers=headers)


# --- token → cookie → clean URL ----------------------------------------------------------------

def test_token_moves_into_cookie_and_clean_url(connect):
    app = connect.create_app_with_requirements([HELPDESK])
    client, path, token = open_page(connect, app)
    assert re.fullmatch(r"/connect/[0-9a-f]{24}", path)
    assert token not in path
    key = path.rsplit("/", 1)[1]
    cookie = client.get_cookie(f"connect_session_{key}", domain="connect.test", path="/connect")
    assert cookie is not None and cookie.value == token
    assert cookie.http_only and cookie.same_site == "Lax" and not cookie.secure
    assert cookie.path == "/connect"
    r = client.get(path, base_url=BASE)
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert token not in html
    assert f"<h1>{app['name']}</h1>" in html


@pytest.mark.parametrize("connect_config", [{"public_url": "https://connect.test"}], indirect=True)
def test_cookie_is_secure_under_https(connect):
    app = connect.create_app_with_requirements([HELPDESK])
    client = connect.app.test_client()
    token = connect.token(app, "user-1")
    r = client.get(f"/connect?token={token}", base_url="https://connect.test")
    assert r.status_code == 303
    set_cookie = r.headers["Set-Cookie"]
    assert "Secure" in set_cookie and "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie


def test_two_links_do_not_overwrite_each_other(connect):
    app_a = connect.create_app_with_requirements([HELPDESK])
    app_b = connect.create_app_with_requirements([WEBHOOK])
    client, path_a1, _ = open_page(connect, app_a, "alice")
    _, path_a2, _ = open_page(connect, app_a, "bob", client=client)
    _, path_b1, _ = open_page(connect, app_b, "alice", client=client)
    assert len({path_a1, path_a2, path_b1}) == 3
    # every page still works with all three cookies in the jar
    r = client.get(path_a1, base_url=BASE)
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and "Helpdesk API key" in html
    r = client.post(f"{path_a2}/requirements/{rid(app_a, 'helpdesk')}/credentials", base_url=BASE, data={
        "csrf_token": csrf_of(client.get(path_a2, base_url=BASE).get_data(as_text=True)),
        "config.url": "https://bob.example.com", "config.api_key": "bob-key"})
    assert r.status_code == 303
    r = client.get(path_b1, base_url=BASE)
    assert r.status_code == 200 and "Alert webhook" in r.get_data(as_text=True)
    # bob's save did not complete alice's requirement
    alice = client.get(path_a1, base_url=BASE).get_data(as_text=True)
    bob = client.get(path_a2, base_url=BASE).get_data(as_text=True)
    assert ">Needs action<" in alice and ">Connected<" in bob


def test_handle_without_its_cookie_or_with_a_forged_handle_is_expired(connect):
    app = connect.create_app_with_requirements([HELPDESK])
    client, path, _ = open_page(connect, app)
    stranger = connect.app.test_client()
    r = stranger.get(path, base_url=BASE)
    assert r.status_code == 401
    assert "This link has expired. Ask the app for a new one." in r.get_data(as_text=True)
    # a cookie for one handle does not open another
    forged = "0" * 24
    token = client.get_cookie(f"connect_session_{path.rsplit('/', 1)[1]}", domain="connect.test",
                              path="/connect").value
    stranger.set_cookie(f"connect_session_{forged}", token, domain="connect.test", path="/connect")
    assert stranger.get(f"/connect/{forged}", base_url=BASE).status_code == 401


@pytest.mark.parametrize("token", ["garbage", "", "ak_notatoken"])
def test_invalid_token_shows_expired_page(connect, token):
    r = connect.app.test_client().get(f"/connect?token={token}", base_url=BASE)
    assert r.status_code == 401
    assert r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    assert "This link has expired. Ask the app for a new one." in html
    assert "Traceback" not in html and "error" not in html.lower().replace("form-error", "")
    assert "Set-Cookie" not in r.headers


def test_expired_token_shows_expired_page(connect):
    from connect_service.testing import TEST_SECRET_KEY
    from connect_service.tokens import mint_connect_token

    app = connect.create_app_with_requirements([HELPDESK])
    issued = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=25)
    token, _ = mint_connect_token(TEST_SECRET_KEY, "http://connect.test", app["id"], "user-1", now=issued)
    r = connect.app.test_client().get(f"/connect?token={token}", base_url=BASE)
    assert r.status_code == 401
    assert "This link has expired. Ask the app for a new one." in r.get_data(as_text=True)


def test_bare_connect_without_cookie_is_expired_page(connect):
    r = connect.app.test_client().get("/connect", base_url=BASE)
    assert r.status_code == 401
    assert "Ask the app for a new one." in r.get_data(as_text=True)


# --- page content ------------------------------------------------------------------------------

def test_page_lists_requirements_with_exact_badges_and_generated_forms(connect):
    app = connect.create_app_with_requirements([HELPDESK, WEBHOOK, CRM, LINKED])
    client, path, token = open_page(connect, app)
    r = connect.submit_credentials(token, rid(app, "helpdesk"), HTTP_API_KEY,
                                   {"url": "https://helpdesk.example.com", "api_key": "hd_secret_value"})
    assert r.status_code == 201
    html = client.get(path, base_url=BASE).get_data(as_text=True)

    badges = re.findall(r"<span class=\"badge[^\"]*\" data-badge>([^<]*)</span>", html)
    assert badges == ["Connected", "Needs action", "Needs action", "Needs action"]
    text = visible_text(html)
    assert text.count("Connected") == 1 and text.count("Needs action") == 3
    assert html.count("Connected") == 1 and html.count("Needs action") == 3

    helpdesk = card_html(html, rid(app, "helpdesk"))
    # every input has a visible label and a name ending with its schema field name
    for name, label, kind in [("url", "API URL", "url"), ("api_key", "API key", "password")]:
        input_id = re.search(rf'<input type="{kind}" id="([^"]+)" name="config\.{name}"', helpdesk).group(1)
        assert re.search(rf'<label for="{re.escape(input_id)}">{label}<span class="req-mark"', helpdesk)
    assert 'value="https://helpdesk.example.com"' in helpdesk  # non-secret prefilled from the connection
    assert "hd_secret_value" not in html  # secrets never come back
    assert ">Save</button>" in helpdesk and "marks a required field" in helpdesk

    webhook = card_html(html, rid(app, "webhook"))
    assert re.search(r'<select id="[^"]+" name="config\.method"', webhook)
    assert '<option value="POST" selected>' in webhook
    assert re.search(r'<input type="password" id="[^"]+" name="config\.headers"', webhook)
    assert "JSON object of headers sent with every request" in webhook  # help text
    for input_id in re.findall(r'<(?:input|select|textarea)[^>]* id="([^"]+)"', html):
        assert f'<label for="{input_id}">' in html

    crm = card_html(html, rid(app, "crm"))
    link = re.search(r'<a class="btn[^"]*"[^>]*href="([^"]+)">Connect</a>', crm)
    assert link, crm
    href = unescape(link.group(1))
    assert href.startswith(f"{path}/oauth2/{rid(app, 'crm')}/start?")
    assert "<form" not in crm

    mail = card_html(html, rid(app, "mail"))
    assert re.search(rf'<form class="link-form" method="post" action="{path}/accounts/{rid(app, "mail")}">', mail)
    assert 'name="csrf_token"' in mail and ">Link account</button>" in mail


def test_security_headers_on_every_connect_response(connect):
    app = connect.create_app_with_requirements([HELPDESK])
    client = connect.app.test_client()
    token = connect.token(app, "user-1")
    responses = [client.get(f"/connect?token={token}", base_url=BASE)]
    path = responses[0].headers["Location"]
    responses += [client.get(path, base_url=BASE), client.get("/connect?token=bad", base_url=BASE),
                  client.get("/connect/static/connect.css", base_url=BASE),
                  client.post(f"{path}/requirements/{rid(app, 'helpdesk')}/credentials", base_url=BASE, data={})]
    for r in responses:
        csp = r.headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'self'"
        assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert r.headers["Cache-Control"] == "no-store"
    page = responses[1].get_data(as_text=True)
    assert "<script>" not in page and "<style" not in page and " style=" not in page and "onclick" not in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # no third-party assets


def test_frame_ancestors_from_app_allow_list(connect):
    app = connect.create_app_with_requirements([HELPDESK], frame_ancestors=["https://portal.example.com/embed"])
    client, path, _ = open_page(connect, app)
    r = client.get(path, base_url=BASE)
    assert "frame-ancestors https://portal.example.com;" in r.headers["Content-Security-Policy"] + ";"
    assert "X-Frame-Options" not in r.headers


def test_static_assets_served(connect):
    client = connect.app.test_client()
    css = client.get("/connect/static/connect.css", base_url=BASE)
    js = client.get("/connect/static/connect.js", base_url=BASE)
    assert css.status_code == 200 and css.mimetype == "text/css"
    assert js.status_code == 200 and "javascript" in js.mimetype


# --- credentials form ----------------------------------------------------------------------------

def test_form_post_saves_and_redirects_to_the_page(connect):
    app = connect.create_app_with_requirements([HELPDESK])
    client, path, token = open_page(connect, app)
    csrf = csrf_of(client.get(path, base_url=BASE).get_data(as_text=True))
    r = post_form(client, f"{path}/requirements/{rid(app, 'helpdesk')}/credentials",
                  {"csrf_token": csrf, "config.url": "https://helpdesk.example.com", "config.api_key": "hd_1"})
    assert r.status_code == 303
    assert urlsplit(r.headers["Location"]).path == path
    assert connect.statuses(token)[rid(app, "helpdesk")] == "completed"
    html = client.get(r.headers["Location"], base_url=BASE).get_data(as_text=True)
    assert ">Connected<" in card_html(html, rid(app, "helpdesk")) and "Saved." in html

    # a resubmission updates the same connection in place
    from connect_service.models import Connection

    with connect.app.app_context():
        first = Connection.get(Connection.requirement_id == rid(app, "helpdesk")).id
    r = post_form(client, f"{path}/requirements/{rid(app, 'helpdesk')}/credentials",
                  {"csrf_token": csrf, "config.url": "https://helpdesk.example.com", "config.api_key": "hd_2"})
    assert r.status_code == 303
    with connect.app.app_context():
        rows = list(Connection.select().where(Connection.requirement_id == rid(app, "helpdesk")))
        assert [c.id for c in rows] == [first]
    r = connect.client.get(f"/v1/connections/{first}?include_secrets=true", headers=connect.auth)
    if r.status_code == 200:  # the connections API belongs to another module; check when it is there
        assert r.get_json()["settings"]["api_key"] == "hd_2"


def test_validation_errors_inline_keep_values_never_secrets(connect):
    app = connect.create_app_with_requirements([HELPDESK, WEBHOOK])
    client, path, token = open_page(connect, app)
    csrf = csrf_of(client.get(path, base_url=BASE).get_data(as_text=True))
    r = post_form(client, f"{path}/requirements/{rid(app, 'helpdesk')}/credentials",
                  {"csrf_token": csrf, "config.url": "not a url", "config.api_key": "hd_typed_secret"})
    assert r.status_code == 400 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    helpdesk = card_html(html, rid(app, "helpdesk"))
    field = re.search(r'<div class="field has-error" data-field="url">.*?</div>', helpdesk, re.S).group(0)
    assert 'value="not a url"' in field and 'aria-invalid="true"' in field
    error = re.search(r'<p class="field-error" id="e-[^"]+">([^<]+)</p>', field).group(1)
    assert error.startswith("API URL must be")
    assert "hd_typed_secret" not in html
    assert ">Needs action<" in helpdesk
    assert connect.statuses(token)[rid(app, "helpdesk")] == "pending"
    # the other form is untouched
    assert 'has-error' not in card_html(html, rid(app, "webhook"))


def test_blank_required_fields_each_get_their_error(connect):
    app = connect.create_app_with_requirements([HELPDESK])
    client, path, _ = open_page(connect, app)
    csrf = csrf_of(client.get(path, base_url=BASE).get_data(as_text=True))
    r = post_form(client, f"{path}/requirements/{rid(app, 'helpdesk')}/credentials",
                  {"csrf_token": csrf, "config.url": "  ", "config.api_key": ""})
    assert r.status_code == 400
    html = r.get_data(as_text=True)
    errors = re.findall(r'<p class="field-error" id="e-f-[^"]+">([^<]+)</p>', html)
    assert errors == ["API URL is required", "API key is required"]


def test_plugin_validation_error_lands_on_its_field(connect):
    app = connect.create_app_with_requirements([WEBHOOK])
    client, path, _ = open_page(connect, app)
    csrf = csrf_of(client.get(path, base_url=BASE).get_data(as_text=True))
    r = post_form(client, f"{path}/requirements/{rid(app, 'webhook')}/credentials",
                  {"csrf_token": csrf, "config.url": "https://hooks.example.com", "config.method": "TRACE",
                   "config.headers": "{not json"})
    assert r.status_code == 400
    html = r.get_data(as_text=True)
    method = re.search(r'data-field="method">.*?</div>', html, re.S).group(0)
    headers = re.search(r'data-field="headers">.*?</div>', html, re.S).group(0)
    assert re.search(r'class="field-error" id="[^"]+">HTTP method ', method)
    assert "Headers must be valid JSON" in headers
    assert "{not json" not in html  # a secret field is not echoed, even when malformed
    assert 'value="https://hooks.example.com"' in html

    r = post_form(client, f"{path}/requirements/{rid(app, 'webhook')}/credentials",
                  {"csrf_token": csrf, "config.url": "https://hooks.example.com", "config.method": "PUT",
                   "config.headers": '{"X-Token": "t0k"}'}, Accept="application/json")
    assert r.status_code == 200
    assert r.get_json() == {"requirement_id": rid(app, "webhook"), "status": "completed", "badge": "Connected",
                            "message": "Saved."}


def test_json_answers_for_the_script(connect):
    app = connect.create_app_with_requirements([HELPDESK])
    client, path, token = open_page(connect, app)
    csrf = csrf_of(client.get(path, base_url=BASE).get_data(as_text=True))
    url = f"{path}/requirements/{rid(app, 'helpdesk')}/credentials"
    r = post_form(client, url, {"csrf_token": csrf, "config.url": "nope", "config.api_key": "hd_x"},
                  Accept="application/json", Origin=BASE)
    assert r.status_code == 400
    body = r.get_json()
    # the service's one error shape (SPEC 4), with the page's sentences as details
    assert set(body) == {"error"}
    assert body["error"]["code"] == "bad_request" and body["error"]["message"] == "Bad Request"
    assert set(body["error"]["details"]) == {"config.url"}
    assert body["error"]["details"]["config.url"].startswith("API URL must be")
    assert "hd_x" not in r.get_data(as_text=True)
    # a form-level problem is the detail "input"
    r = post_form(client, f"{path}/requirements/{uuid.uuid4()}/credentials", {"csrf_token": csrf},
                  Accept="application/json", Origin=BASE)
    assert r.status_code == 404
    assert r.get_json() == {"error": {"code": "not_found", "message": "Not Found", "details": {
        "input": "This requirement no longer exists. Reload the page."}}}
    r = post_form(client, url, {"csrf_token": "0" * 64}, Accept="application/json")
    assert r.status_code == 403 and set(r.get_json()) == {"error"}
    assert r.get_json()["error"]["code"] == "forbidden" and set(r.get_json()["error"]["details"]) == {"input"}
    r = post_form(connect.app.test_client(), url, {"csrf_token": csrf}, Accept="application/json")
    assert r.status_code == 401 and r.get_json()["error"]["message"] == "Unauthorized"
    r = post_form(client, url, {"csrf_token": csrf, "config.url": "https://h.example.com", "config.api_key": "hd_x"},
                  Accept="application/json", Origin=BASE)
    assert r.status_code == 200 and r.get_json()["badge"] == "Connected"
    assert connect.statuses(token)[rid(app, "helpdesk")] == "completed"


# --- CSRF -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["missing", "wrong", "other-session", "cross-origin", "cross-site-fetch"])
def test_posts_without_valid_csrf_or_from_other_origins_are_refused(connect, case):
    app = connect.create_app_with_requirements([HELPDESK])
    client, path, token = open_page(connect, app)
    csrf = csrf_of(client.get(path, base_url=BASE).get_data(as_text=True))
    data = {"config.url": "https://helpdesk.example.com", "config.api_key": "hd_1", "csrf_token": csrf}
    headers = {}
    if case == "missing":
        data.pop("csrf_token")
    elif case == "wrong":
        data["csrf_token"] = "0" * 64
    elif case == "other-session":
        _, other_path, _ = open_page(connect, app, "mallory", client=client)
        data["csrf_token"] = csrf_of(client.get(other_path, base_url=BASE).get_data(as_text=True))
    elif case == "cross-origin":
        headers["Origin"] = "https://evil.example.com"
    else:
        headers["Sec-Fetch-Site"] = "cross-site"
    r = post_form(client, f"{path}/requirements/{rid(app, 'helpdesk')}/credentials", data, **headers)
    assert r.status_code == 403
    assert "refused" in r.get_data(as_text=True).lower() or "expired" in r.get_data(as_text=True).lower()
    assert connect.statuses(token)[rid(app, "helpdesk")] == "pending"


def test_same_origin_and_null_origin_posts_are_accepted(connect):
    """A form navigation under ``Referrer-Policy: no-referrer`` sends ``Origin: null``; the token decides."""
    app = connect.create_app_with_requirements([HELPDESK])
    client, path, token = open_page(connect, app)
    csrf = csrf_of(client.get(path, base_url=BASE).get_data(as_text=True))
    for origin in (BASE, "null"):
        r = post_form(client, f"{path}/requirements/{rid(app, 'helpdesk')}/credentials",
                      {"csrf_token": csrf, "config.url": "https://h.example.com", "config.api_key": "k"},
                      Origin=origin, **{"Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 303


def test_post_without_session_cookie_is_expired(connect):
    app = connect.create_app_with_requirements([HELPDESK])
    _, path, _ = open_page(connect, app)
    r = post_form(connect.app.test_client(), f"{path}/requirements/{rid(app, 'helpdesk')}/credentials",
                  {"csrf_token": "x", "config.url": "https://h.example.com", "config.api_key": "k"})
    assert r.status_code == 401 and "Ask the app for a new one." in r.get_data(as_text=True)


def test_unknown_requirement_in_post_is_a_page_error_not_a_500(connect):
    app = connect.create_app_with_requirements([HELPDESK])
    client, path, _ = open_page(connect, app)
    csrf = csrf_of(client.get(path, base_url=BASE).get_data(as_text=True))
    r = post_form(client, f"{path}/requirements/{uuid.uuid4()}/credentials",
                  {"csrf_token": csrf, "config.url": "https://h.example.com", "config.api_key": "k"})
    assert r.status_code == 404 and r.mimetype == "text/html"


# --- OAuth2 and action accounts -------------------------------------------------------------------

def make_oauth_credential(connect, app):
    from connect_service import oauth
    from connect_service.models import Credential, new_id

    with connect.app.app_context():
        cred = Credential(id=new_id("ccfg"), org=connect.org_id, app=app["id"], read_access="APP",
                          name="CRM", connector_name="pagecrm", oauth_url="https://crm.example.com/authorize",
                          oauth_token_url="https://crm.example.com/token", oauth_client_id="crm-client",
                          oauth_scope="contacts.read")
        oauth.set_client_secret(cred, "crm-secret")
        cred.save(force_insert=True)
        return cred.id


def test_oauth_connect_link_starts_a_browser_bound_flow(connect):
    from connect_service import oauth
    from connect_service.models import AuthorizationSession

    app = connect.create_app_with_requirements([CRM])
    cred_id = make_oauth_credential(connect, app)
    client, path, _ = open_page(connect, app)
    html = client.get(path, base_url=BASE).get_data(as_text=True)
    start = unescape(re.search(r'href="([^"]+)">Connect</a>', html).group(1))

    r = client.get(start, base_url=BASE)
    assert r.status_code == 302
    location = r.headers["Location"]
    assert location.startswith("https://crm.example.com/authorize?")
    query = parse_qs(urlsplit(location).query)
    assert query["client_id"] == ["crm-client"]
    assert query["redirect_uri"] == [f"{BASE}/v1/connect/oauth2/callback/{cred_id}"]
    cookie_name = oauth.nonce_cookie_name(query["state"][0])  # one binding cookie per flow
    nonce_cookie = client.get_cookie(cookie_name, domain="connect.test", path=oauth.CALLBACK_PATH)
    assert nonce_cookie is not None and nonce_cookie.http_only and nonce_cookie.same_site == "Lax"
    set_cookie = [h for h in r.headers.getlist("Set-Cookie") if h.startswith(cookie_name + "=")][0]
    assert "Max-Age=600" in set_cookie and "Path=/v1/connect/oauth2/callback" in set_cookie
    with connect.app.app_context():
        session = AuthorizationSession.get()
        assert session.browser_nonce_hash == oauth.hash_secret(nonce_cookie.value)
        assert session.return_to == f"{BASE}{path}"

    # the start link needs the page's CSRF value and the session cookie
    assert client.get(start.split("?")[0], base_url=BASE).status_code == 403
    assert connect.app.test_client().get(start, base_url=BASE).status_code == 401


def test_oauth_start_without_a_credential_shows_the_problem_on_the_page(connect):
    app = connect.create_app_with_requirements([CRM])
    client, path, _ = open_page(connect, app)
    html = client.get(path, base_url=BASE).get_data(as_text=True)
    start = unescape(re.search(r'href="([^"]+)">Connect</a>', html).group(1))
    r = client.get(start, base_url=BASE)
    assert r.status_code == 400 and r.mimetype == "text/html"
    crm = card_html(r.get_data(as_text=True), rid(app, "crm"))
    # the end user is told the setup is incomplete, never the org's credential ids (the log has those)
    assert re.search(r'<p class="form-error" id="fe-[^"]+" role="alert">This account cannot be connected right '
                     r'now: [^<]*setup is incomplete', crm)


def test_return_from_provider_shows_outcome_on_the_page(connect):
    from connect_service.models import Connection

    app = connect.create_app_with_requirements([CRM, HELPDESK])
    client, path, _ = open_page(connect, app)
    with connect.app.app_context():
        Connection.create(org=connect.org_id, app=app["id"], customer_id="user-1", requirement_id=rid(app, "crm"),
                          type=OAuthCrm.name, connector_name="pagecrm", status="error",
                          status_reason="authorization failed: access_denied: <b>nope</b>")
    # the bare /connect (what a provider may send the browser back to) finds this browser's page
    r = client.get(f"/connect?status=error&requirement_id={rid(app, 'crm')}&error=access_denied", base_url=BASE)
    assert r.status_code == 303
    assert urlsplit(r.headers["Location"]).path == path
    html = client.get(r.headers["Location"], base_url=BASE).get_data(as_text=True)
    crm = card_html(html, rid(app, "crm"))
    assert "The authorization for CRM account did not complete: authorization failed: access_denied: " \
           "&lt;b&gt;nope&lt;/b&gt;" in crm
    assert ">Needs action<" in crm

    with connect.app.app_context():
        Connection.update(status="active", status_reason=None).execute()
    html = client.get(f"{path}?status=success&requirement_id={rid(app, 'crm')}", base_url=BASE).get_data(as_text=True)
    crm = card_html(html, rid(app, "crm"))
    assert ">Connected<" in crm and "Authorization for CRM account finished." in crm


def csp(response) -> dict[str, str]:
    return dict(d.strip().split(" ", 1) for d in response.headers["Content-Security-Policy"].split(";"))


def test_action_account_button_posts_and_redirects_to_the_link(connect):
    app = connect.create_app_with_requirements([LINKED])
    client, path, _ = open_page(connect, app)
    r = client.get(path, base_url=BASE)
    html = r.get_data(as_text=True)
    # forms may go to this service and to the link page the type declares, nowhere else
    assert csp(r)["form-action"] == "'self' https://link.example.com"
    action = f"{path}/accounts/{rid(app, 'mail')}"
    assert post_form(client, action, {"csrf_token": "bad"}).status_code == 403
    assert Linker.calls == []
    r = post_form(client, action, {"csrf_token": csrf_of(html)})
    assert r.status_code == 303
    assert r.headers["Location"] == "https://link.example.com/start?user=user-1"
    # the platform sends the browser back to this very page, naming the requirement
    back = f"{BASE}{path}?requirement_id={rid(app, 'mail')}"
    assert Linker.calls[0]["success"] == back + "&status=success"
    assert Linker.calls[0]["error"] == back + "&status=error"


@pytest.mark.parametrize("url, origin", [
    ("https://Link.Example.com/start?x=1", "https://link.example.com"),
    ("http://127.0.0.1:8080/a", "http://127.0.0.1:8080"),
    ("https://link.example.com:443/", "https://link.example.com"),
    ("https://user:pw@link.example.com/", "https://link.example.com"),
    ("https://link.example.com;script-src *", None),  # never anything that could end a CSP directive
    ("https://link example.com/", None),
    ("javascript:alert(1)", None),
    ("//link.example.com/", None),
])
def test_origin_of(url, origin):
    from connect_service.accounts import origin_of

    assert origin_of(url) == origin


def test_pages_without_action_accounts_allow_forms_to_this_service_only(connect):
    app = connect.create_app_with_requirements([HELPDESK, CRM])
    client, path, _ = open_page(connect, app)
    assert csp(client.get(path, base_url=BASE))["form-action"] == "'self'"


def test_link_outside_the_declared_origins_is_not_followed(connect):
    app = connect.create_app_with_requirements([LINKED])
    client, path, _ = open_page(connect, app)
    csrf = csrf_of(client.get(path, base_url=BASE).get_data(as_text=True))
    Linker.link_host = "evil.example.net"
    r = post_form(client, f"{path}/accounts/{rid(app, 'mail')}", {"csrf_token": csrf})
    assert r.status_code == 502 and "Location" not in r.headers
    mail = card_html(r.get_data(as_text=True), rid(app, "mail"))
    assert "The account cannot be linked right now: the platform answered with an unexpected link page." in mail
    assert "evil.example.net" not in r.get_data(as_text=True)


def test_link_from_the_page_comes_back_to_that_page_among_several(connect):
    """Two apps' pages in one browser: the link of the second one returns to the second one."""
    app_a = connect.create_app_with_requirements([LINKED])
    app_b = connect.create_app_with_requirements([LINKED])
    client, path_a, _ = open_page(connect, app_a)
    _, path_b, _ = open_page(connect, app_b, client=client)
    csrf = csrf_of(client.get(path_b, base_url=BASE).get_data(as_text=True))
    assert post_form(client, f"{path_b}/accounts/{rid(app_b, 'mail')}", {"csrf_token": csrf}).status_code == 303
    for outcome in ("success", "error"):
        back = urlsplit(Linker.calls[-1][outcome])
        assert back.path == path_b  # not the bare /connect, which would pick a page by guessing
        r = client.get(f"{back.path}?{back.query}", base_url=BASE)
        assert r.status_code == 200
        mail = card_html(r.get_data(as_text=True), rid(app_b, "mail"))
        if outcome == "success":
            assert "Linking Mail account finished. If it is not marked done yet, reload this page in a minute." \
                in mail
        else:
            assert "Linking Mail account did not complete. Try again." in mail
        assert 'class="notice' not in client.get(path_a, base_url=BASE).get_data(as_text=True)


@pytest.mark.parametrize("connect_config", [{"rate_limit_credentials_per_minute": 1}], indirect=True)
def test_link_rate_limit_is_shown_on_the_page(connect):
    app = connect.create_app_with_requirements([LINKED])
    client, path, _ = open_page(connect, app)
    csrf = csrf_of(client.get(path, base_url=BASE).get_data(as_text=True))
    action = f"{path}/accounts/{rid(app, 'mail')}"
    assert post_form(client, action, {"csrf_token": csrf}).status_code == 303
    r = post_form(client, action, {"csrf_token": csrf})
    assert r.status_code == 429 and r.mimetype == "text/html" and int(r.headers["Retry-After"]) > 0
    mail = card_html(r.get_data(as_text=True), rid(app, "mail"))
    assert re.search(r'<p class="form-error" id="fe-[^"]+" role="alert">Too many attempts. Wait a minute and '
                     r'try again.</p>', mail)
    r = post_form(client, action, {"csrf_token": csrf}, Accept="application/json")
    assert r.status_code == 429 and "Retry-After" in r.headers
    assert r.get_json() == {"error": {"code": "too_many_requests", "message": "Too Many Requests", "details": {
        "input": "Too many attempts. Wait a minute and try again."}}}
    assert len(Linker.calls) == 1


def test_platform_failure_when_linking_is_shown_on_the_page(connect):
    from connect_service import errors

    app = connect.create_app_with_requirements([LINKED])
    client, path, _ = open_page(connect, app)
    csrf = csrf_of(client.get(path, base_url=BASE).get_data(as_text=True))
    Linker.fail = errors.BadGateway({"platform": "Test linker answered HTTP 503 <b>down</b>"})
    action = f"{path}/accounts/{rid(app, 'mail')}"
    r = post_form(client, action, {"csrf_token": csrf})
    assert r.status_code == 502 and r.mimetype == "text/html" and "Location" not in r.headers
    html = r.get_data(as_text=True)
    mail = card_html(html, rid(app, "mail"))
    # error details never carry markup (issue 12 item 10): the brackets become ‹ ›
    assert "The account cannot be linked right now: Test linker answered HTTP 503 ‹b›down‹/b›." in mail
    assert ">Needs action<" in mail and "<b>down" not in html
    r = post_form(client, action, {"csrf_token": csrf}, Accept="application/json")
    assert r.status_code == 502
    assert r.get_json()["error"] == {"code": "bad_gateway", "message": "Bad Gateway", "details": {
        "input": "The account cannot be linked right now: Test linker answered HTTP 503 ‹b›down‹/b›."}}
    # a missing configuration (400) keeps its status
    Linker.fail = errors.BadRequest({"credential": "no credential for connector 'pagelinker'"})
    r = post_form(client, action, {"csrf_token": csrf})
    assert r.status_code == 400
    assert "no credential for connector &#39;pagelinker&#39;" in card_html(r.get_data(as_text=True),
                                                                         rid(app, "mail"))


# --- back without a page session ---------------------------------------------------------------

@pytest.mark.parametrize("query, heading, message", [
    ("status=success", "Done", "Done \u2014 you can close this window."),
    ("status=error", "Not completed", "The account was not connected."),
    ("status=error&error=access_denied", "Not completed", "The account was not connected: access_denied."),
    # anything that is not a short code is not repeated (no text injection, never markup)
    ("status=error&error=%3Cscript%3Ealert(1)%3C%2Fscript%3E", "Not completed", "The account was not connected."),
])
def test_back_without_a_page_cookie_shows_a_neutral_result(connect, query, heading, message):
    """A link started through the API without return_to ends at the bare /connect in any browser."""
    r = connect.app.test_client().get(f"/connect?{query}", base_url=BASE)
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    assert f'<h1 id="message-heading">{heading}</h1>' in html
    assert f'<p class="lead">{message}</p>' in html
    assert "expired" not in html and "<script>" not in html
    assert "Set-Cookie" not in r.headers and r.headers["Cache-Control"] == "no-store"


def test_back_to_a_page_whose_cookie_is_gone_shows_a_neutral_result(connect):
    app = connect.create_app_with_requirements([LINKED])
    _, path, _ = open_page(connect, app)
    stranger = connect.app.test_client()
    r = stranger.get(f"{path}?requirement_id={rid(app, 'mail')}&status=success", base_url=BASE)
    assert r.status_code == 200 and "Done \u2014 you can close this window." in r.get_data(as_text=True)
    # without a status it is still the expired page
    for url in (path, "/connect?status=maybe"):
        r = stranger.get(url, base_url=BASE)
        assert r.status_code == 401 and "This link has expired." in r.get_data(as_text=True)


# --- session cookies ---------------------------------------------------------------------------

def session_cookies(client) -> dict[str, str]:
    return {c.key: c.value for c in client._cookies.values() if c.key.startswith("connect_session_")}


def test_session_cookies_are_pruned_and_capped(connect):
    from connect_service.testing import TEST_SECRET_KEY
    from connect_service.tokens import mint_connect_token

    apps = [connect.create_app_with_requirements([HELPDESK]) for _ in range(2)]
    client = connect.app.test_client()
    now = datetime.datetime.now(datetime.timezone.utc)
    minted = []
    for n in range(11):  # oldest first
        app = apps[n % 2]
        token, _ = mint_connect_token(TEST_SECRET_KEY, BASE, app["id"], f"user-{n}",
                                      now=now - datetime.timedelta(minutes=60 - n))
        r = client.get(f"/connect?token={token}", base_url=BASE)
        assert r.status_code == 303
        minted.append(r.headers["Location"].rsplit("/", 1)[1])
    assert set(session_cookies(client)) == {f"connect_session_{k}" for k in minted[-8:]}

    # expired, forged and malformed cookies go at the next link; the other valid ones stay
    expired, _ = mint_connect_token(TEST_SECRET_KEY, BASE, apps[0]["id"], "old",
                                    now=now - datetime.timedelta(hours=25))
    client.set_cookie("connect_session_" + "a" * 24, expired, domain="connect.test", path="/connect")
    client.set_cookie("connect_session_" + "b" * 24, "garbage", domain="connect.test", path="/connect")
    client.set_cookie("connect_session_x", "y", domain="connect.test", path="/connect")
    client.set_cookie("unrelated", "kept", domain="connect.test", path="/connect")
    _, newest, _ = open_page(connect, apps[0], "newest", client=client)
    cookies = session_cookies(client)
    assert set(cookies) == {f"connect_session_{k}" for k in [*minted[-7:], newest.rsplit("/", 1)[1]]}
    assert client.get_cookie("unrelated", domain="connect.test", path="/connect") is not None
    # a deletion carries the cookie's attributes, so the browser really drops it
    r = client.get(f"/connect?token={connect.token(apps[1], 'again')}", base_url=BASE)
    deleted = [h for h in r.headers.getlist("Set-Cookie") if "Max-Age=0" in h]
    assert len(deleted) == 1 and "Path=/connect" in deleted[0] and "HttpOnly" in deleted[0]
    # every kept page still opens
    for name in session_cookies(client):
        assert client.get(f"/connect/{name.rsplit('_', 1)[1]}", base_url=BASE).status_code == 200


def test_reopening_a_link_keeps_one_cookie_for_it(connect):
    app = connect.create_app_with_requirements([HELPDESK])
    client, path, _ = open_page(connect, app)
    for _ in range(3):
        open_page(connect, app, client=client)
    assert list(session_cookies(client)) == [f"connect_session_{path.rsplit('/', 1)[1]}"]


# --- escaping ----------------------------------------------------------------------------------

XSS = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


def assert_escaped(html: str) -> None:
    assert "<script>alert" not in html and "<img src=x" not in html and "onerror=alert(2)>" not in html


def test_names_titles_and_descriptions_are_escaped(connect):
    """Everything an app owner types through the management API is text on the page, never markup."""
    r = connect.client.post("/v1/apps", headers=connect.auth, json={
        "name": XSS, "hostname": "xss.apps.test", "visibility": "public"})
    assert r.status_code == 201, r.get_json()
    app = r.get_json()
    requirements = [dict(HELPDESK, title=XSS, description=XSS), dict(CRM, title=XSS, description=XSS),
                    dict(LINKED, title=XSS, description=XSS)]
    connect.deploy(app, requirements)
    make_oauth_credential(connect, app)
    client, path, _ = open_page(connect, app)
    html = client.get(path, base_url=BASE).get_data(as_text=True)
    assert_escaped(html)
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&gt;&lt;img src=x onerror=alert(2)&gt;"
    assert f"<h1>{escaped}</h1>" in html and f"<title>{escaped}: connect your accounts</title>" in html
    assert html.count(f'<p class="desc">{escaped}</p>') == 3
    csrf = csrf_of(html)

    # an error re-render of the page (the value typed is echoed escaped too)
    r = post_form(client, f"{path}/requirements/{rid(app, 'helpdesk')}/credentials",
                  {"csrf_token": csrf, "config.url": XSS, "config.api_key": "k"})
    assert r.status_code == 400
    assert_escaped(r.get_data(as_text=True))
    assert 'value="&lt;script&gt;' in r.get_data(as_text=True)
    # notices of a return (OAuth and link, success and error, with an error argument)
    for key in ("crm", "mail"):
        for query in ("status=success", "status=error&error=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
                      "status=error&error=access_denied"):
            html = client.get(f"{path}?requirement_id={rid(app, key)}&{query}", base_url=BASE).get_data(
                as_text=True)
            assert_escaped(html)
            assert 'class="notice notice-' in card_html(html, rid(app, key))
    # the saved notice and the page-level notice
    for query in (f"saved={rid(app, 'helpdesk')}", "status=success", "status=error"):
        assert_escaped(client.get(f"{path}?{query}", base_url=BASE).get_data(as_text=True))
    r = client.get(f"/connect?status=error&requirement_id={rid(app, 'crm')}", base_url=BASE)
    assert_escaped(client.get(r.headers["Location"], base_url=BASE).get_data(as_text=True))
    # a link failure, an OAuth start failure and a refused post
    Linker.fail = __import__("connect_service").errors.BadGateway({"platform": XSS})
    r = post_form(client, f"{path}/accounts/{rid(app, 'mail')}", {"csrf_token": csrf})
    assert r.status_code == 502
    assert_escaped(r.get_data(as_text=True))
    r = post_form(client, f"{path}/accounts/{rid(app, 'mail')}", {"csrf_token": "bad"})
    assert r.status_code == 403
    assert_escaped(r.get_data(as_text=True))


def test_oauth_error_reason_from_the_provider_is_escaped(connect):
    from connect_service.models import Connection

    app = connect.create_app_with_requirements([CRM])
    client, path, _ = open_page(connect, app)
    with connect.app.app_context():
        Connection.create(org=connect.org_id, app=app["id"], customer_id="user-1", requirement_id=rid(app, "crm"),
                          type=OAuthCrm.name, connector_name="pagecrm", status="error",
                          status_reason=f"authorization failed: {XSS}")
    html = client.get(f"{path}?status=error&requirement_id={rid(app, 'crm')}", base_url=BASE).get_data(
        as_text=True)
    assert_escaped(html)
    assert "authorization failed: &lt;script&gt;alert(1)&lt;/script&gt;" in card_html(html, rid(app, "crm"))

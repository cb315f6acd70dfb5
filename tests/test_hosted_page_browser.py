"""The hosted connect page driven in real headless Chromium (Playwright, Debian's /usr/bin/chromium)."""
from __future__ import annotations

import re

import pytest

from tests.browser import artifact_path  # the fixtures (live_service, chromium, ...) come from conftest
from tests.conftest import HTTP_API_KEY
from tests.support.oauth_server import OAuthTestServer

pytestmark = pytest.mark.browser

HELPDESK = {"key": "helpdesk", "type": "connection", "title": "Helpdesk API key",
            "description": "Read-only access to your helpdesk tickets.",
            "spec": {"type": "connection", "data": {"type": HTTP_API_KEY}}}
CRM = {"key": "crm", "type": "connection", "title": "CRM account",
       "description": "Your contacts, read with OAuth2.",
       "spec": {"type": "connection", "data": {"type": "dynamiq.connections.OAuth2"}}}
WEBHOOK = {"key": "webhook", "type": "connection", "title": "Alert webhook",
           "description": "Where alerts are posted.",
           "spec": {"type": "connection", "data": {"type": "dynamiq.connections.Http"}}}


def connect_url(live, requirements, user="user-1", **app_extra):
    harness = live.harness
    app = harness.create_app_with_requirements(requirements, **app_extra)
    r = harness.client.post("/v1/connect/tokens", json={"user_id": user}, headers={"Host": app["hostname"]})
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    assert body["connect_url"].startswith(live.url + "/connect?token=")
    return app, body["token"], body["connect_url"]


def card(page, app, key):
    return page.locator(f"#req-{live_requirement_id(app, key)}")


def live_requirement_id(app, key):
    import uuid

    return str(uuid.uuid5(uuid.UUID(app["id"]), key))


def badge(page, app, key):
    return card(page, app, key).locator("[data-badge]")


def test_credentials_form_wrong_then_right_value(live_service, browser_page):
    page = browser_page
    app, token, url = connect_url(live_service, [HELPDESK, WEBHOOK])
    page.goto(url)
    # the token left the URL at once
    assert token not in page.url
    assert re.fullmatch(re.escape(live_service.url) + r"/connect/[0-9a-f]{24}", page.url)
    assert page.get_by_role("heading", level=1).inner_text() == app["name"]
    assert page.locator(".connecting-for").inner_text() == "Connecting for user-1"  # whose session this is
    assert badge(page, app, "helpdesk").inner_text() == "Needs action"
    assert badge(page, app, "webhook").inner_text() == "Needs action"

    # the other form's typed state must survive the first form's submissions
    webhook = card(page, app, "webhook")
    webhook.get_by_label("URL").fill("https://hooks.example.com/alerts")

    helpdesk = card(page, app, "helpdesk")
    helpdesk.get_by_label("API URL").fill("not a url")
    helpdesk.get_by_label("API key").fill("hd_live_secret_1")
    # hold the request to see the progress indication while it is in flight
    held = []
    page.route("**/credentials", lambda route: held.append(route))
    helpdesk.get_by_role("button", name="Save").click()
    progress = helpdesk.locator(".progress.busy")
    progress.wait_for(state="visible")
    assert progress.inner_text() == "Saving\u2026"
    assert helpdesk.get_by_role("button", name="Save").is_disabled()
    assert helpdesk.locator("form").get_attribute("aria-busy") == "true"
    page.wait_for_function("() => true")  # let Playwright dispatch the route event
    assert len(held) == 1
    held[0].continue_()
    page.unroute("**/credentials")
    error = helpdesk.locator(".field[data-field=url] .field-error")
    error.wait_for(state="visible")
    assert re.fullmatch(r"API URL must be .*http\(s\) URL", error.inner_text())
    assert helpdesk.get_by_label("API URL").get_attribute("aria-invalid") == "true"
    assert helpdesk.get_by_label("API URL").input_value() == "not a url"
    assert helpdesk.get_by_role("button", name="Save").is_enabled() and progress.count() == 0
    assert badge(page, app, "helpdesk").inner_text() == "Needs action"

    helpdesk.get_by_label("API URL").fill("https://helpdesk.example.com/api")
    helpdesk.get_by_label("API key").fill("hd_live_secret_2")
    helpdesk.get_by_role("button", name="Save").click()
    page.wait_for_function(
        "el => el.textContent === 'Connected'", arg=badge(page, app, "helpdesk").element_handle())
    assert badge(page, app, "helpdesk").inner_text() == "Connected"
    assert error.is_hidden()
    assert helpdesk.get_by_label("API key").input_value() == ""  # the secret is not kept in the page
    assert webhook.get_by_label("URL").input_value() == "https://hooks.example.com/alerts"
    assert badge(page, app, "webhook").inner_text() == "Needs action"

    # the server agrees, and a reload (no token in the URL any more) shows the same
    assert live_service.harness.statuses(token)[live_requirement_id(app, "helpdesk")] == "completed"
    page.reload()
    assert badge(page, app, "helpdesk").inner_text() == "Connected"
    assert card(page, app, "helpdesk").get_by_label("API URL").input_value() == "https://helpdesk.example.com/api"


def test_credentials_form_without_javascript(live_service, chromium):
    context = chromium.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        app, token, url = connect_url(live_service, [HELPDESK])
        page.goto(url)
        helpdesk = card(page, app, "helpdesk")
        helpdesk.get_by_label("API URL").fill("ftp://helpdesk.example.com")
        helpdesk.get_by_label("API key").fill("hd_nojs_secret")
        helpdesk.get_by_role("button", name="Save").click()
        page.wait_for_load_state()
        helpdesk = card(page, app, "helpdesk")
        assert re.fullmatch(r"API URL must be .*http\(s\) URL",
                            helpdesk.locator(".field[data-field=url] .field-error").inner_text())
        assert helpdesk.get_by_label("API URL").input_value() == "ftp://helpdesk.example.com"
        assert helpdesk.get_by_label("API key").input_value() == ""
        assert "hd_nojs_secret" not in page.content()

        helpdesk.get_by_label("API URL").fill("https://helpdesk.example.com")
        helpdesk.get_by_label("API key").fill("hd_nojs_secret")
        helpdesk.get_by_role("button", name="Save").click()
        page.wait_for_load_state()
        assert badge(page, app, "helpdesk").inner_text() == "Connected"
        assert live_service.harness.statuses(token)[live_requirement_id(app, "helpdesk")] == "completed"
    finally:
        context.close()


def test_keyboard_only_and_phone_width(live_service, chromium):
    context = chromium.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        app, token, url = connect_url(live_service, [HELPDESK, WEBHOOK])
        page.goto(url)
        # nothing overflows sideways at 375 px
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        page.screenshot(path=artifact_path("hosted-page-375.png"), full_page=True)

        # keyboard only: Tab to the first field, type, Tab, type, Enter on Save
        page.keyboard.press("Tab")
        for _ in range(10):
            if page.evaluate("document.activeElement && document.activeElement.name") == "config.url":
                break
            page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.name") == "config.url"
        page.keyboard.type("https://helpdesk.example.com")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.name") == "config.api_key"
        page.keyboard.type("hd_keyboard")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Save"
        page.keyboard.press("Enter")
        page.wait_for_function(
            "el => el.textContent === 'Connected'", arg=badge(page, app, "helpdesk").element_handle())
    finally:
        context.close()


@pytest.fixture
def oauth_server(live_service):
    """The Authlib test authorization server with a client for this service and an org-wide credential."""
    server = OAuthTestServer().start()
    try:
        server.auto_approve = False  # the test clicks Allow / Deny on the consent page
        harness = live_service.harness
        r = harness.client.post("/v1/credentials", headers=harness.auth, json={
            "name": "Test CRM", "mode": "OAUTH", "connector_name": "oauth2",
            "oauth_url": server.authorize_url, "oauth_token_url": server.token_url,
            "oauth_client_id": "page-client", "oauth_client_secret": "page-secret",
            "oauth_scope": "profile", "oauth_grant_type": "authorization_code"})
        assert r.status_code == 201, r.get_json()
        # registered with the credential's own redirect URI, exactly (issue 12)
        assert r.get_json()["redirect_uri"].startswith(f"{live_service.url}/v1/connect/oauth2/callback/")
        server.add_client("page-client", "page-secret", [r.get_json()["redirect_uri"]],
                          token_endpoint_auth_method="client_secret_basic")
        yield server
        assert server.errors == []
    finally:
        server.stop()


def test_oauth2_flow_through_the_consent_page(live_service, oauth_server, browser_page):
    page = browser_page
    app, token, url = connect_url(live_service, [HELPDESK, CRM])
    page.goto(url)
    assert badge(page, app, "crm").inner_text() == "Needs action"

    helpdesk = card(page, app, "helpdesk")
    helpdesk.get_by_label("API URL").fill("https://helpdesk.example.com/api")
    helpdesk.get_by_label("API key").fill("hd_live_secret")
    helpdesk.get_by_role("button", name="Save").click()
    page.wait_for_function(
        "el => el.textContent === 'Connected'", arg=badge(page, app, "helpdesk").element_handle())

    connect_link = card(page, app, "crm").get_by_role("link", name="Connect")
    assert connect_link.get_attribute("href").startswith(urlsplit_path(page.url) + "/oauth2/")
    connect_link.click()
    page.wait_for_url(oauth_server.authorize_url + "?*")
    assert oauth_server.authorize_requests[-1]["client_id"] == "page-client"
    page.get_by_role("button", name="Allow").click()

    page.wait_for_url(re.compile(re.escape(live_service.url) + r"/connect/[0-9a-f]{24}\?status=success.*"))
    assert badge(page, app, "crm").inner_text() == "Connected"
    assert badge(page, app, "helpdesk").inner_text() == "Connected"
    assert card(page, app, "crm").locator(".notice").inner_text() == "Authorization for CRM account finished."
    assert oauth_server.token_calls("authorization_code") == 1
    statuses = live_service.harness.statuses(token)
    assert set(statuses.values()) == {"completed"}
    # exactly the badges carry the two status words
    body = page.inner_text("body")
    assert body.count("Connected") == 2 and "Needs action" not in body
    page.screenshot(path=artifact_path("hosted-page-completed.png"), full_page=True)


def test_denied_consent_shows_an_error_on_the_page(live_service, oauth_server, browser_page):
    page = browser_page
    app, token, url = connect_url(live_service, [CRM])
    page.goto(url)
    card(page, app, "crm").get_by_role("link", name="Connect").click()
    page.wait_for_url(oauth_server.authorize_url + "?*")
    page.get_by_role("button", name="Deny").click()

    page.wait_for_url(re.compile(re.escape(live_service.url) + r"/connect/[0-9a-f]{24}\?status=error.*"))
    notice = card(page, app, "crm").locator(".notice-error")
    assert notice.get_attribute("role") == "alert"
    assert notice.inner_text().startswith("The authorization for CRM account did not complete")
    assert "access_denied" in notice.inner_text()
    assert badge(page, app, "crm").inner_text() == "Needs action"
    assert oauth_server.token_calls("authorization_code") == 0
    assert live_service.harness.statuses(token)[live_requirement_id(app, "crm")] == "pending"
    page.screenshot(path=artifact_path("hosted-page-denied.png"), full_page=True)


def urlsplit_path(url):
    from urllib.parse import urlsplit

    return urlsplit(url).path


def framed(page, parent_origin, url):
    """Open the embedding site framing ``url``; wait for the frame's load; return the frame."""
    from urllib.parse import quote

    page.goto(f"{parent_origin}/?src={quote(url, safe='')}")
    page.wait_for_function("document.body.dataset.loads >= 1")
    [frame] = page.main_frame.child_frames
    return frame


def test_framing_works_for_a_same_site_allow_listed_parent_only(live_service, browser_page, framing_parent):
    """SameSite=Lax: the session cookie travels only into a same-site frame (docs/hosted-page.md)."""
    page = browser_page
    same_site = f"http://127.0.0.1:{framing_parent}"  # another port of the service's host: same site
    cross_site = f"http://localhost:{framing_parent}"  # another host: cross-site
    app, token, url = connect_url(live_service, [HELPDESK], frame_ancestors=[same_site, cross_site])
    page_loads = []  # (status) of every /connect/<handle> response, frames included
    page.on("response", lambda r: page_loads.append(r.status)
            if re.search(r"/connect/[0-9a-f]{24}$", r.url) else None)

    # 1. same-site and allow-listed: the page shows and works in the frame
    frame = framed(page, same_site, url)
    assert re.fullmatch(re.escape(live_service.url) + r"/connect/[0-9a-f]{24}", frame.url)
    assert frame.get_by_role("heading", level=1).inner_text() == app["name"]
    helpdesk = frame.locator(f"#req-{live_requirement_id(app, 'helpdesk')}")
    helpdesk.get_by_label("API URL").fill("https://helpdesk.example.com/api")
    helpdesk.get_by_label("API key").fill("hd_framed_secret")
    helpdesk.get_by_role("button", name="Save").click()
    frame.wait_for_function("el => el.textContent === 'Connected'",
                            arg=helpdesk.locator("[data-badge]").element_handle())
    assert live_service.harness.statuses(token)[live_requirement_id(app, "helpdesk")] == "completed"

    # 2. same-site but not allow-listed: served, but the browser refuses to show it (frame-ancestors)
    page_loads.clear()
    _, _, other_url = connect_url(live_service, [HELPDESK], frame_ancestors=["https://portal.example.com"])
    frame = framed(page, same_site, other_url)
    assert page_loads == [200]
    assert frame.url.startswith("chrome-error://")

    # 3. cross-site, even allow-listed: the SameSite=Lax cookie does not travel into the frame, so there
    #    is no page session (401, the expired page, which is not framable either)
    page_loads.clear()
    frame = framed(page, cross_site, url)
    assert page_loads == [401]
    assert frame.url.startswith("chrome-error://")
    # the same link opened top-level (or in a popup) works
    page.goto(url)
    assert page.get_by_role("heading", level=1).inner_text() == app["name"]

"""Issue 12 item 6: ``/docs`` renders the API docs UI from the service's own files, offline.

Headless Chromium loads ``/docs`` with every request that does not go to the
service's own loopback origin aborted (and recorded); the UI must still show
the operations, and the page's CSP must allow only ``'self'``.
"""
from urllib.parse import urlsplit


def test_docs_ui_renders_offline_from_the_service_itself(live_service, browser_page):
    page = browser_page
    origin = urlsplit(live_service.url).netloc
    left, csp_violations = [], []

    def only_loopback(route):
        if urlsplit(route.request.url).netloc == origin:
            route.continue_()
        else:
            left.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    page.on("console", lambda msg: csp_violations.append(msg.text)
            if "Content Security Policy" in msg.text else None)
    response = page.goto(f"{live_service.url}/docs")
    assert response.status == 200
    csp = response.headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
    assert directives["default-src"] == "'self'" and directives["script-src"] == "'self'"
    # only 'self' (images also as inline data: URIs, which fetch nothing)
    assert directives.pop("img-src") == "'self' data:"
    assert all(value in ("'self'", "'none'") for value in directives.values()), csp

    page.wait_for_selector(".opblock", timeout=30_000)
    operations = page.locator(".opblock").count()
    assert operations >= 30, operations
    assert page.locator(".opblock-summary-path", has_text="/v1/apps").count() >= 1
    assert "connect-service" in page.locator(".info .title").inner_text()
    # expanding an operation works without any outside request
    page.locator(".opblock-summary", has_text="/v1/connect/tokens").first.click()
    page.wait_for_selector(".opblock-body")
    assert left == [], left
    assert csp_violations == [], csp_violations

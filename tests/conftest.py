import pytest

# tests.browser's fixtures are registered once here: a session-scoped Chromium imported into two test
# modules would be two sessions, and the second Playwright start fails inside the first one's loop
pytest_plugins = ["connect_service.testing", "tests.browser"]

HTTP_API_KEY = "dynamiq.connections.HttpApiKey"

SEED_REQUIREMENTS = [
    {"key": "gmail", "type": "pipedream_account", "title": "Connect your Gmail account",
     "description": "Used to send triage replies on your behalf.",
     "spec": {"type": "pipedream_account", "data": {"app_slug": "gmail"}}},
    {"key": "helpdesk", "type": "connection", "title": "Helpdesk API key",
     "description": "Read-only access to your helpdesk tickets.",
     "spec": {"type": "connection", "data": {"type": HTTP_API_KEY}}},
]

API_KEY_ONLY = [SEED_REQUIREMENTS[1]]


@pytest.fixture
def app_with_key(connect):
    """A public app whose deployed version requires one HttpApiKey connection."""
    return connect.create_app_with_requirements(API_KEY_ONLY)

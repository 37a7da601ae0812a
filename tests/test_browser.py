"""The operator console in a real browser: Debian's Chromium driven by Playwright, against
daphne, a real Celery worker, the Redis channel layer and PostgreSQL."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from tests.browser import ARTIFACTS, log_in

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_operator_logs_in_to_the_admin(browser_page, asgi_server):
    User.objects.create_superuser("operator", "operator@example.com", "secret-pass-1")
    log_in(browser_page, asgi_server, "operator", "secret-pass-1")
    assert "Agent runs" in browser_page.content()
    browser_page.screenshot(path=str(ARTIFACTS / "admin-index.png"))
    assert browser_page.problems == []

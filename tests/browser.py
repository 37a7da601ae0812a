"""Browser-test fixtures: a live ASGI server (daphne) and Debian's Chromium through Playwright.

The server is a real daphne process on a free port serving the test database, with the
Redis channel layer, so the page, its websockets and the Celery worker are all real.
Chromium is the system one (``/usr/bin/chromium``): Playwright never downloads a browser.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.db import connections

from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "var" / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


DAPHNE = [sys.executable, "-m", "daphne", "-b", "127.0.0.1"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package")
    return found


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def asgi_server(transactional_db, tmp_path) -> Iterator[LiveServer]:
    """daphne serving tests.live_asgi on a free port, against the test database."""
    port = free_port()
    log_path = tmp_path / "daphne.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "AGENTFLOW_TEST_WORKER": "1",  # the test database pytest-django created
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [*DAPHNE, "-p", str(port), "tests.live_asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path)

    def listening() -> bool:
        assert process.poll() is None, f"daphne exited:\n{server.log()[-3000:]}"
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, timeout=60, what="daphne to listen")
    yield server
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def browser_page(asgi_server) -> Iterator:
    """A fresh Chromium page; every page error and dialog is recorded on ``page.problems``."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls
    # are still plain synchronous calls between browser steps.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.problems = []
        page.on("pageerror", lambda error: page.problems.append(f"page error: {error}"))
        page.on(
            "dialog",
            lambda dialog: (page.problems.append(f"dialog: {dialog.message}"), dialog.dismiss()),
        )
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()
            # The test's ORM calls ran while Playwright's loop was running, on connections
            # of their own: close them here, or the test database cannot be dropped.
            connections.close_all()
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def log_in(page, server: LiveServer, username: str, password: str) -> None:
    """Log in through the admin's own login form."""
    page.goto(f"{server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(f"{server.url}/admin/")


PASSWORD = "secret-pass-1"


@pytest.fixture
def operator(browser_page, asgi_server):
    """A superuser named "operator", logged in through the admin's login form."""
    from django.contrib.auth.models import User

    User.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    log_in(browser_page, asgi_server, "operator", PASSWORD)
    return browser_page


def open_run(page, server: LiveServer, run) -> None:
    """Open a run's page and wait until its socket is live."""
    from django.urls import reverse

    page.goto(server.url + reverse("admin:agentflow_run_change", args=[run.id]))
    page.wait_for_selector('[data-testid=connection][data-state="live"]')


@contextlib.contextmanager
def chromium() -> Iterator:
    """Debian's Chromium, launched headless through Playwright, for tests that serve a site."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


# What the run page loads from STATIC_URL, and the content type each must come with.
CONSOLE_STATIC = {
    "admin/css/base.css": "text/css",
    "agentflow/console.css": "text/css",
    "agentflow/socket.js": "javascript",
    "agentflow/decide.js": "javascript",
    "agentflow/run_page.js": "javascript",
}


def approve_in_the_console(browser, url: str, run_id: str, username: str, password: str) -> None:
    """Log in, open a run that waits for approval, see the console load and go live, approve,
    and see the run succeed (a worker finishes it; its events reach the page over the socket).

    ``url`` is a site served on its own (not the ``asgi_server`` fixture): its static files
    answer, its stylesheets apply and its scripts run, or this fails saying which.
    """
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    answers: dict[str, tuple[int | str, str]] = {}  # the first answer to each path
    page.on(
        "response",
        lambda response: answers.setdefault(
            urlsplit(response.url).path,
            (response.status, response.headers.get("content-type", "")),
        ),
    )
    page.on(
        "requestfailed",
        lambda request: answers.setdefault(urlsplit(request.url).path, (request.failure, "")),
    )
    try:
        page.goto(f"{url}/admin/login/?next=/admin/")
        page.fill("#id_username", username)
        page.fill("#id_password", password)
        page.click("input[type=submit]")
        page.wait_for_url(f"{url}/admin/")
        run_page = f"{url}/admin/agentflow/run/{run_id}/change/"
        page.goto(run_page)  # returns once its stylesheets and scripts are loaded

        for name, kind in CONSOLE_STATIC.items():
            status, content_type = answers.get(f"/static/{name}", (None, ""))
            assert status == 200 and kind in content_type, (
                f"/static/{name} answered {status} {content_type!r} at {url}"
            )
        # The stylesheets apply: the admin's defines its colours, the console's floats the
        # connection indicator; decide.js prepared the approval form.
        primary = "getComputedStyle(document.documentElement).getPropertyValue('--primary')"
        assert page.evaluate(primary).strip(), "the admin's stylesheet did not apply"
        indicator = "getComputedStyle(document.getElementById('af-connection')).cssFloat"
        assert page.evaluate(indicator) == "right", "the console's stylesheet did not apply"
        assert page.get_attribute("form.af-decide", "data-shown") is not None, "decide.js"

        # socket.js shows "live" once the websocket is open (a 404 says "reconnecting…").
        page.wait_for_selector('#af-connection[data-state="live"]', timeout=15_000)
        assert page.text_content("#af-connection") == "live"
        assert page.evaluate("document.documentElement.dataset.afSocket") == "live"

        page.click("[data-testid=approve]")
        page.wait_for_selector('[data-testid=decide-result][data-state="done"]')
        # The worker finishes the run; its events reach the page over the socket.
        expect(page.locator("#af-run-status")).to_have_text("succeeded", timeout=30_000)
        assert page.url == run_page, f"Approve left the page for {page.url}"
        assert not errors, errors
    finally:
        context.close()

"""Operator actions in a real browser: confirmations, the start form, "run now", 420 px.

Debian's Chromium through Playwright, against daphne, real Celery workers, the Redis
channel layer and PostgreSQL. Screenshots land in var/test-artifacts/.
"""

from __future__ import annotations

import pytest
from django.urls import reverse
from playwright.sync_api import expect

import agentflow
from agentflow.models import Approval, Run
from tests.browser import ARTIFACTS, open_run
from tests.support import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
NARROW = 420
expect.set_options(timeout=30_000)


def test_cancel_asks_first_and_going_back_cancels_nothing(workers, operator, asgi_server):
    workers("w1", concurrency=2)
    blocked = agentflow.start("tests.browser_steps", {"flag": "never"})
    wait_until(
        lambda: blocked.steps.filter(position=1).exists(), timeout=30, what="the gate to block"
    )
    open_run(operator, asgi_server, blocked)
    button = operator.locator("[data-testid=cancel]")
    assert "af-danger" in button.get_attribute("class")
    assert button.evaluate("b => getComputedStyle(b).backgroundColor") != operator.locator(
        "[data-testid=resume], [data-testid=fork]"
    ).first.evaluate("b => getComputedStyle(b).backgroundColor")

    button.click()
    dialog = operator.locator("[data-testid=confirm-dialog]")
    expect(dialog).to_be_visible()
    assert str(blocked.id) in dialog.inner_text()
    operator.screenshot(path=str(ARTIFACTS / "cancel-confirm.png"))
    dialog.locator("[data-testid=confirm-no]").click()
    expect(dialog).to_be_hidden()
    assert Run.objects.get(id=blocked.id).status == Run.Status.RUNNING

    button.click()
    # A live refresh swaps the actions panel while the question is open: the answer goes
    # to the form that is on the page now.
    operator.evaluate(
        "() => { const a = document.querySelector('#af-actions'); a.outerHTML = a.outerHTML; }"
    )
    dialog.locator("[data-testid=confirm-yes]").click()
    expect(operator.locator("#af-run-status")).to_have_text("cancelled")
    assert Run.objects.get(id=blocked.id).status == Run.Status.CANCELLED
    assert operator.problems == []


def test_reject_asks_first_then_the_decision_reaches_the_run(workers, operator, asgi_server):
    workers("w1", concurrency=2)
    run = agentflow.wait(agentflow.start("tests.browser_approval", {"amount": 10}), timeout=60)
    assert run.status == Run.Status.WAITING
    open_run(operator, asgi_server, run)
    panel = operator.locator("[data-testid=approval-panel]")
    reject = panel.locator("[data-testid=reject]")
    assert "af-danger" in reject.get_attribute("class")
    reject.click()
    dialog = operator.locator("[data-testid=confirm-dialog]")
    dialog.locator("[data-testid=confirm-no]").click()
    assert Approval.objects.get(run=run).status == Approval.Status.PENDING

    reject.click()
    dialog.locator("[data-testid=confirm-yes]").click()
    expect(operator.locator("#af-run-status")).to_have_text("succeeded")
    assert Approval.objects.get(run=run).status == Approval.Status.REJECTED
    assert Run.objects.get(id=run.id).output["approved"] is False
    assert operator.problems == []


def test_start_a_run_from_the_form_built_from_the_agents_schema(workers, operator, asgi_server):
    workers("w1", concurrency=2)
    operator.goto(asgi_server.url + reverse("admin:agentflow_run_changelist"))
    operator.locator("[data-testid=start-link]").click()
    operator.locator("[data-testid=start-agent]").select_option("tests.start_form")
    operator.locator("[data-testid=start-choose-agent]").click()
    form = operator.locator("[data-testid=start-form]")
    form.locator("#af-start-period").fill("2026-01")
    form.locator("#af-start-count").fill("three")
    form.locator("#af-start-tags").fill('["a", 2]')
    form.locator("[data-testid=start-submit]").click()

    expect(operator.locator("[data-testid=start-error-count]")).to_contain_text(
        "count: give a whole number"
    )
    assert not Run.objects.exists()
    operator.screenshot(path=str(ARTIFACTS / "start-form-errors.png"), full_page=True)
    form.locator("#af-start-count").fill("3")
    form.locator("#af-start-dry_run").check()
    form.locator("#af-start-mode").select_option(label="careful")
    form.locator("[data-testid=start-submit]").click()
    expect(operator.locator("[data-testid=start-error-tags]")).to_contain_text(
        "tags.1: Input should be a valid string."
    )
    form.locator("#af-start-tags").fill('["a", "b"]')
    form.locator("[data-testid=start-submit]").click()

    operator.wait_for_selector("[data-testid=run-page]")
    run = Run.objects.get()
    assert str(run.id) in operator.url
    expect(operator.locator("#af-run-status")).to_have_text("succeeded")
    assert agentflow.wait(run).output == {
        "period": "2026-01", "count": 3, "ratio": 0.5, "dry_run": True, "mode": "careful",
        "tags": ["a", "b"],
    }  # fmt: skip
    assert run.owner.username == "operator"
    assert operator.problems == []


def test_run_now_starts_the_schedules_agent_and_shows_it_as_last_fired(
    workers, operator, asgi_server
):
    workers("w1", concurrency=2)
    task = agentflow.schedule("tests.mixed", {"n": 2}, every=3600, name="hourly mix")
    operator.goto(asgi_server.url + reverse("admin:index"))
    operator.get_by_role("link", name="Schedules", exact=True).first.click()
    row = operator.locator(f'[data-testid=schedule-row][data-schedule="{task.id}"]')
    expect(row.locator("[data-testid=schedule-when]")).to_have_text("every hour")
    expect(row.locator("[data-testid=schedule-last-fired]")).to_have_text("\u2013")
    row.get_by_role("link", name="hourly mix").click()
    operator.locator("[data-testid=schedule-run-now]").click()

    operator.wait_for_selector("[data-testid=run-page]")
    run = Run.objects.get()
    assert (run.schedule_id, run.input) == (task.id, {"n": 2})
    expect(operator.locator("#af-run-status")).to_have_text("succeeded")
    operator.goto(asgi_server.url + reverse("admin:agentflow_run_schedule", args=[task.id]))
    expect(operator.locator("[data-testid=schedule-last-fired]")).not_to_have_text("\u2013")
    expect(operator.locator("[data-testid=schedule-run-row]")).to_have_count(1)
    operator.screenshot(path=str(ARTIFACTS / "schedule-page.png"), full_page=True)

    operator.locator("[data-testid=schedule-delete]").click()
    operator.locator("[data-testid=confirm-yes]").click()
    operator.wait_for_selector("[data-testid=schedules-page]")
    assert not Run.objects.filter(schedule__isnull=False).exists()
    assert Run.objects.filter(id=run.id).exists()
    assert operator.problems == []


def _no_sideways_scroll(page, name: str) -> None:
    """The page is no wider than the viewport; a screenshot is kept either way."""
    page.screenshot(path=str(ARTIFACTS / f"narrow-{name}.png"), full_page=True)
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= NARROW, (name, widths, _widest(page))


def _widest(page) -> list:
    """The elements that reach past the viewport, for the failure message."""
    return page.evaluate(
        """(limit) => Array.from(document.querySelectorAll('body *'))
             .filter(e => e.getBoundingClientRect().right > limit)
             .slice(0, 8).map(e => e.tagName + '.' + e.className + '#' + e.id + ' in '
                              + (e.closest('[id]') || {}).id + ' '
                              + Math.round(e.getBoundingClientRect().right))""",
        NARROW,
    )


def test_the_console_does_not_scroll_sideways_at_420_px(workers, operator, asgi_server):
    workers("w1", concurrency=2)
    run = agentflow.wait(agentflow.start("tests.wide_approval", {"width": 600}), timeout=60)
    assert run.status == Run.Status.WAITING
    done = agentflow.wait(agentflow.start("tests.browser_hostile", {}), timeout=60)
    agentflow.schedule("tests.mixed", {"n": 1}, crontab="0 9 * * 1-5", name="x" * 120)
    operator.set_viewport_size({"width": NARROW, "height": 900})

    open_run(operator, asgi_server, run)
    operator.locator("[data-testid=approval-panel]").wait_for()
    _no_sideways_scroll(operator, "run-page")
    open_run(operator, asgi_server, done)
    _no_sideways_scroll(operator, "finished-run-page")
    for name, url in (
        ("approvals-queue", reverse("admin:agentflow_approval_queue")),
        ("schedules", reverse("admin:agentflow_run_schedules")),
        ("start-form", reverse("admin:agentflow_run_start") + "?agent=tests.start_form"),
    ):
        operator.goto(asgi_server.url + url)
        operator.wait_for_load_state("load")
        _no_sideways_scroll(operator, name)
    assert operator.problems == []

"""The readable console in Chromium: labelled approvals, changes, errors, compare, record page.

Real daphne, real Celery workers, PostgreSQL; screenshots land in var/test-artifacts/.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from playwright.sync_api import expect

import agentflow
from agentflow.models import Approval, Run
from tests.browser import ARTIFACTS, PASSWORD, log_in, open_run
from tests.support import wait_until
from tests.test_readable import _compared

pytestmark = pytest.mark.django_db(transaction=True)
expect.set_options(timeout=30_000)


@pytest.fixture
def reviewer(browser_page, asgi_server):
    """A superuser logged in through the admin's login form."""
    User.objects.create_superuser("reviewer", "reviewer@example.com", PASSWORD)
    log_in(browser_page, asgi_server, "reviewer", PASSWORD)
    return browser_page


def test_an_approval_reads_as_labelled_fields_and_its_edit_shows_as_a_change(
    workers, reviewer, asgi_server
):
    workers("w1", concurrency=2)
    run = agentflow.wait(agentflow.start("tests.readable_approval", {"amount": 310}), timeout=60)
    assert run.status == Run.Status.WAITING
    open_run(reviewer, asgi_server, run)
    panel = reviewer.locator("[data-testid=approval-panel]")
    request = panel.locator("[data-testid=approval-request]")
    expect(request.locator('dt[data-name="invoice"]')).to_have_text("Invoice number")
    expect(request.locator('dd[data-name="invoice"]')).to_contain_text("INV-2011")
    expect(request.locator('dt[data-name="amount"]')).to_have_text("Amount (USD)")
    expect(request.locator('dd[data-name="urgent"]')).to_have_text("no")
    lines = request.locator('dd[data-name="lines"]')
    expect(lines.locator("details").first).to_be_visible()  # a tree, not JSON text
    expect(lines).to_contain_text("<b>B-2</b>")  # shown as text
    assert lines.locator("b").count() == 0
    reviewer.screenshot(path=str(ARTIFACTS / "readable-approval.png"), full_page=True)

    panel.locator('input[data-field="amount"]').fill("300")
    panel.locator("[data-testid=approve]").click()
    expect(reviewer.locator("#af-run-status")).to_have_text("succeeded")
    assert agentflow.wait(run).output == {"approved": True, "amount": 300}

    open_run(reviewer, asgi_server, run)
    row = reviewer.locator('#af-timeline tr[data-position="0"]')
    change = row.locator("[data-testid=approval-change]")
    expect(change).to_have_count(1)
    expect(change.locator("th")).to_have_text("Amount (USD)")
    expect(change.locator("[data-testid=change-proposed]")).to_have_text("310")
    expect(change.locator("[data-testid=change-decided]")).to_have_text("300")
    expect(row.locator("[data-testid=step-waited]")).to_contain_text("for a person")
    reviewer.screenshot(path=str(ARTIFACTS / "readable-approval-changes.png"), full_page=True)
    assert reviewer.problems == []


def test_a_failed_runs_error_shows_its_type_and_a_collapsible_traceback(
    workers, reviewer, asgi_server
):
    workers("w1", concurrency=2)
    run = agentflow.wait(agentflow.start("tests.browser_retry", {"flag": "never"}), timeout=60)
    assert run.status == Run.Status.FAILED
    open_run(reviewer, asgi_server, run)
    box = reviewer.locator("[data-testid=run-error] [data-testid=error-box]")
    expect(box.locator("[data-testid=error-type]")).to_have_text("ToolError")
    expect(box.locator("[data-testid=error-message]")).to_contain_text("flag never is not set")
    traceback = box.locator("[data-testid=traceback]")
    expect(traceback.locator("pre")).to_be_hidden()  # folded until asked for
    traceback.locator("summary").click()
    expect(traceback.locator("pre")).to_be_visible()
    text = traceback.locator("pre").inner_text()
    assert text.startswith("Traceback (most recent call last):")
    assert text.count("\n") >= 5 and "\\n" not in text.splitlines()[0]
    step_error = reviewer.locator('#af-timeline tr[data-position="1"] [data-testid=step-error]')
    expect(step_error.locator("[data-testid=error-type]")).to_have_text("RuntimeError")
    reviewer.screenshot(path=str(ARTIFACTS / "readable-error.png"), full_page=True)
    assert reviewer.problems == []


def test_the_compare_page_opens_with_a_summary_of_the_differences(reviewer, asgi_server):
    parent, fork = _compared()
    url = reverse("admin:agentflow_run_compare") + f"?a={parent.id}&b={fork.id}"
    reviewer.goto(asgi_server.url + url)
    summary = reviewer.locator("[data-testid=compare-summary]")
    expect(summary.locator("[data-testid=summary-count]")).to_have_text("2")
    expect(summary.locator("[data-testid=summary-first]")).to_have_text("position 12")
    expect(summary.locator("[data-testid=summary-status-b]")).to_have_text("failed")
    expect(reviewer.locator("[data-testid=compare-step]")).to_have_count(2)
    reviewer.screenshot(path=str(ARTIFACTS / "readable-compare.png"), full_page=True)
    summary.locator("[data-testid=compare-toggle]").click()
    expect(reviewer.locator("[data-testid=compare-step]")).to_have_count(30)
    expect(reviewer.locator("[data-testid=compare-toggle]")).to_have_text(
        "Show only the differences"
    )
    reviewer.locator("[data-testid=summary-first]").click()
    assert reviewer.url.endswith("#compare-12")
    assert reviewer.problems == []


def test_deciding_on_the_approval_record_page(workers, reviewer, asgi_server):
    workers("w1", concurrency=2)
    run = agentflow.wait(agentflow.start("tests.browser_approval", {"amount": 10}), timeout=60)
    assert run.status == Run.Status.WAITING
    approval = Approval.objects.get(run=run)
    reviewer.goto(asgi_server.url + reverse("admin:agentflow_approval_change", args=[approval.id]))
    record = reviewer.locator("[data-testid=approval-record]")
    expect(record.locator("[data-testid=approval-request]")).to_contain_text("10")
    record.locator('input[data-field="amount"]').fill("25")
    record.locator("[data-testid=decide-comment]").fill("checked on the record page")
    record.locator("[data-testid=approve]").click()
    expect(record.locator("[data-testid=decide-result]")).to_contain_text("approved")
    expect(record.locator("[data-testid=approval-status]")).to_have_text("approved")
    wait_until(
        lambda: Run.objects.get(id=run.id).status == Run.Status.SUCCEEDED,
        timeout=60,
        what="the run to finish after the decision",
    )
    assert Run.objects.get(id=run.id).output == {"approved": True, "amount": 25}
    reviewer.screenshot(path=str(ARTIFACTS / "readable-record-page.png"), full_page=True)

    reviewer.reload()
    expect(record.locator("[data-testid=approval-decision]")).to_contain_text("by reviewer")
    expect(record.locator("[data-testid=change-decided]")).to_have_text("25")
    assert record.locator("[data-testid=decide-form]").count() == 0
    reviewer.screenshot(path=str(ARTIFACTS / "readable-record-decided.png"), full_page=True)
    assert reviewer.problems == []

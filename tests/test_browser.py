"""The operator console in a real browser: Debian's Chromium driven by Playwright, against
daphne, a real Celery worker, the Redis channel layer and PostgreSQL.

Screenshots of the run page and the approvals queue land in var/test-artifacts/.
"""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from playwright.sync_api import expect

import agentflow
from agentflow.models import Run
from tests.browser import ARTIFACTS, open_run
from tests.support import wait_until
from tests.testapp.agents import HOSTILE
from tests.testapp.models import Flag

pytestmark = pytest.mark.django_db(transaction=True)
expect.set_options(timeout=30_000)  # a loaded machine: the run, not the browser, is slow


def run_status(page) -> str:
    return page.locator("#af-run-status").inner_text().strip()


def test_a_new_step_appears_on_the_run_page_without_a_reload(workers, operator, asgi_server):
    workers("w1", concurrency=2)
    run = agentflow.start("tests.browser_steps", {"flag": "go"})
    wait_until(
        lambda: Run.objects.get(id=run.id).steps.filter(position=1).exists(),
        timeout=30,
        what="the run to reach its gate",
    )
    open_run(operator, asgi_server, run)
    operator.evaluate("window.__notReloaded = true")
    assert operator.locator('#af-timeline tr[data-position="2"]').count() == 0

    Flag.objects.create(name="go")

    operator.wait_for_selector('#af-timeline tr[data-position="2"]')
    expect(operator.locator("#af-run-status")).to_have_text("succeeded")
    assert operator.evaluate("window.__notReloaded") is True
    assert agentflow.wait(run).status == Run.Status.SUCCEEDED
    assert operator.problems == []


def test_approve_with_an_edited_value_completes_the_run_with_it(workers, operator, asgi_server):
    workers("w1", concurrency=2)
    run = agentflow.wait(agentflow.start("tests.browser_approval", {"amount": 10}), timeout=60)
    assert run.status == Run.Status.WAITING
    open_run(operator, asgi_server, run)
    operator.evaluate("window.__notReloaded = true")
    panel = operator.locator("[data-testid=approval-panel]")
    panel.locator('input[data-field="amount"]').fill("25")
    panel.locator("[data-testid=decide-comment]").fill("checked the invoice")
    panel.locator("[data-testid=approve]").click()

    expect(operator.locator("#af-run-status")).to_have_text("succeeded")
    assert "approved" in panel.locator("[data-testid=decide-result]").inner_text()
    assert '"amount":25' in operator.locator("#af-events").inner_text()
    assert operator.evaluate("window.__notReloaded") is True
    assert Run.objects.get(id=run.id).output == {"approved": True, "amount": 25}
    operator.screenshot(path=str(ARTIFACTS / "run-page.png"), full_page=True)
    assert operator.problems == []


def test_a_hostile_tool_output_renders_as_text_and_runs_no_script(workers, operator, asgi_server):
    workers("w1", concurrency=2)
    run = agentflow.wait(agentflow.start("tests.browser_hostile", {}), timeout=60)
    assert run.status == Run.Status.SUCCEEDED
    open_run(operator, asgi_server, run)
    row = operator.locator('#af-timeline tr[data-position="0"]')
    row.locator("[data-testid=step-details] > summary").click()  # payloads nest summaries

    shown = row.locator("[data-testid=step-output]").inner_text()
    assert "<script>window.__pwned = 1</script>" in shown
    assert "onerror" in operator.locator("[data-testid=run-output]").inner_text()
    assert operator.evaluate("window.__pwned") is None
    assert operator.locator("#af-run img").count() == 0
    assert HOSTILE not in operator.content()  # only its escaped form is in the page
    assert operator.problems == []


def test_cancel_retry_and_fork_from_the_run_page(workers, operator, asgi_server):
    workers("w1", concurrency=2)
    blocked = agentflow.start("tests.browser_steps", {"flag": "never"})
    wait_until(
        lambda: blocked.steps.filter(position=1).exists(), timeout=30, what="the gate to block"
    )
    open_run(operator, asgi_server, blocked)
    operator.locator("[data-testid=cancel]").click()
    operator.locator("[data-testid=confirm-yes]").click()  # confirm.js asks first
    expect(operator.locator("#af-run-status")).to_have_text("cancelled")
    assert Run.objects.get(id=blocked.id).status == Run.Status.CANCELLED

    failed = agentflow.wait(agentflow.start("tests.browser_retry", {"flag": "fix"}), timeout=60)
    assert failed.status == Run.Status.FAILED
    Flag.objects.create(name="fix")  # the operator fixed the cause
    open_run(operator, asgi_server, failed)
    operator.locator("[data-testid=resume]").click()
    expect(operator.locator("#af-run-status")).to_have_text("succeeded")
    assert agentflow.wait(failed).output == "fixed"

    open_run(operator, asgi_server, failed)
    operator.locator("[data-testid=fork-position]").fill("1")
    operator.locator("[data-testid=fork]").click()
    operator.wait_for_selector("[data-testid=parent-link]")
    fork = Run.objects.get(parent=failed)
    assert str(fork.id) in operator.url
    assert agentflow.wait(fork).status == Run.Status.SUCCEEDED
    assert operator.problems == []


def test_the_approvals_queue_lists_pending_approvals(workers, operator, asgi_server):
    workers("w1", concurrency=2)
    first = agentflow.wait(agentflow.start("tests.browser_approval", {"amount": 1}), timeout=60)
    operator.goto(asgi_server.url + reverse("admin:agentflow_approval_queue"))
    operator.wait_for_selector("[data-testid=queue-item]")
    # The list socket has no backlog: start the next run once the page listens.
    operator.wait_for_selector('#af-connection[data-state="live"]')
    agentflow.start("tests.browser_approval", {"amount": 2})
    # A new approval shows up without a reload.
    expect(operator.locator("li[data-testid^=queue-item]")).to_have_count(2)
    assert str(first.id) in operator.locator("[data-testid=queue-item]").first.inner_text()
    operator.screenshot(path=str(ARTIFACTS / "approvals-queue.png"), full_page=True)
    assert operator.problems == []


def test_a_model_call_streams_its_tokens_onto_the_run_page_as_text(workers, operator, asgi_server):
    import threading

    from tests.openai_server import OpenAIServer, Reply

    held = threading.Event()
    words = ["Thinking ", "about ", "it: ", "<img src=x onerror=window.__pwned=1> ", "is ",
             "just ", "text ", "here ", "and ", "done."]  # fmt: skip
    with OpenAIServer() as model:
        model.script(Reply(chunks=words, chunk_delay=0.05, hold=held, hold_after=1))
        workers("w1", env={"AGENTFLOW_TEST_OPENAI_URL": model.base_url})
        run = agentflow.start("tests.ask_model", {"question": "Stream?"})
        assert model.streaming.wait(60), "the model call never started streaming"
        open_run(operator, asgi_server, run)
        held.set()  # the rest of the stream now reaches the open page, delta by delta
        streaming = operator.locator("li.af-streaming .af-event-data")
        expect(streaming).to_contain_text("<img src=x onerror=window.__pwned=1> is just text")
        expect(streaming).to_contain_text("here and done.")
        expect(operator.locator("#af-run-status")).to_have_text("succeeded")
    # The step's row got the tokens and cost of its step.completed, live.
    llm_row = operator.locator('#af-timeline tr[data-position="1"]')
    expect(llm_row.locator(".af-step-tokens")).to_have_text("10 / 10")
    # As the server renders it (the row is refreshed from the page's own URL).
    expect(llm_row.locator(".af-step-cost")).to_have_text(re.compile(r"^\$0\.0001(0*)$"))
    assert operator.evaluate("window.__pwned") is None
    assert operator.locator("li.af-streaming img").count() == 0
    operator.screenshot(path=str(ARTIFACTS / "run-page-streaming.png"), full_page=True)

"""Live console pages in a real browser: every panel follows the run without a reload.

Debian's Chromium (Playwright) against daphne, real Celery workers, the Redis channel
layer and PostgreSQL. Each test marks the window (``window.__notReloaded``) and checks the
mark at the end: the page was never reloaded. Screenshots land in var/test-artifacts/.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from playwright.sync_api import expect

import agentflow
from agentflow import schedules
from agentflow._engine.state.outbox import append_event
from agentflow.models import Approval, Run
from tests.browser import ARTIFACTS
from tests.support import wait_until
from tests.testapp.models import Flag

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[1]
expect.set_options(timeout=30_000)  # a loaded machine: the run, not the browser, is slow

LIVE_FETCH = "x-agentflow-live"
NOT_YET = re.compile(r"^\s*[-\N{EN DASH}]?\s*$")  # a time that has not come: a dash


def count_live_fetches(page) -> list[str]:
    """Record every live refresh the page sends (its X-Agentflow-Live requests)."""
    fetched: list[str] = []
    page.on(
        "request",
        lambda request: fetched.append(request.url) if LIVE_FETCH in request.headers else None,
    )
    return fetched


def open_live(page, url: str) -> None:
    """Open ``url``, wait for its socket, and mark the window to prove it is never reloaded."""
    page.goto(url)
    page.wait_for_selector("html[data-af-socket=live]")
    page.evaluate("window.__notReloaded = true")


def not_reloaded(page) -> bool:
    return page.evaluate("window.__notReloaded") is True


def fact(page, name: str):
    """The <dd> of a summary fact by its <dt> text."""
    return page.locator(f"xpath=//dt[normalize-space()='{name}']/following-sibling::dd[1]").first


def test_the_run_page_follows_a_run_through_an_approval_to_its_output(
    workers, operator, asgi_server
):
    workers("w1", concurrency=2)
    run = agentflow.start("tests.live_gated_approval", {"flag": "live-gate", "amount": 10})
    wait_until(
        lambda: Run.objects.get(id=run.id).steps.filter(position=1).exists(),
        timeout=60,
        what="the run to reach its gate",
    )
    open_live(operator, asgi_server.url + reverse("admin:agentflow_run_change", args=[run.id]))
    expect(operator.locator("[data-testid=approve]")).to_have_count(0)
    expect(fact(operator, "Finished")).to_have_text(NOT_YET)
    expect(operator.locator("[data-testid=cancel]")).to_have_count(1)

    Flag.objects.create(name="live-gate")

    # The question arrives with its whole form, usable, and what the run waits on says so.
    pending = operator.locator("[data-testid=pending-approval]")
    expect(pending.locator("[data-testid=approve]")).to_be_enabled()
    expect(operator.locator("[data-testid=wait-approval]")).to_contain_text("Pay the invoice?")
    expect(operator.locator("#af-run-status")).to_have_text("waiting")
    # The new timeline row came with its details, from the server.
    gate_row = operator.locator('#af-timeline tr[data-position="1"]')
    expect(gate_row.locator("[data-testid=step-details]")).to_have_count(1)
    gate_row.locator("[data-testid=step-details] > summary").click()
    expect(gate_row.locator("[data-testid=step-output]")).to_contain_text("live-gate")
    operator.screenshot(path=str(ARTIFACTS / "live-run-page-approval.png"), full_page=True)

    # A reviewer fills the form in while every panel is swapped: the edit, the same form
    # (not a copy) and the open step details survive.
    pending.locator('input[data-field="amount"]').fill("25")
    operator.evaluate("document.querySelector('[data-testid=pending-approval]').__kept = 1")
    swaps = operator.evaluate("window.agentflow.live.swaps")
    operator.evaluate("window.agentflow.live.served = {}; window.agentflow.live.refresh()")
    wait_until(
        lambda: operator.evaluate("window.agentflow.live.swaps") > swaps,
        timeout=30,
        what="every panel to be swapped",
    )
    expect(pending.locator('input[data-field="amount"]')).to_have_value("25")
    assert operator.evaluate("document.querySelector('[data-testid=pending-approval]').__kept")
    expect(gate_row.locator("[data-testid=step-details]")).to_have_attribute("open", "")
    pending.locator("[data-testid=decide-comment]").fill("checked")
    pending.locator("[data-testid=approve]").click()

    expect(operator.locator("#af-run-status")).to_have_text("succeeded")
    expect(operator.locator("[data-testid=run-output]")).to_contain_text("25")
    expect(fact(operator, "Finished")).not_to_have_text(NOT_YET)
    expect(operator.locator("[data-testid=cancel]")).to_have_count(0)
    # The decided question stays, saying who decided and how; nothing dangles.
    result = pending.locator("[data-testid=decide-result]")
    expect(result).to_contain_text("approved by operator")
    expect(pending.locator("[data-testid=approve]")).to_be_disabled()
    expect(operator.locator("[data-testid=wait-approval]")).to_have_count(0)
    assert Run.objects.get(id=run.id).output == {"approved": True, "amount": 25}
    assert "reload" not in operator.locator("#af-run").inner_text().lower()
    assert not_reloaded(operator)
    operator.screenshot(path=str(ARTIFACTS / "live-run-page-finished.png"), full_page=True)
    assert operator.problems == []


def test_the_approvals_queue_gets_new_questions_with_their_forms_and_count(
    workers, operator, asgi_server
):
    workers("w1", concurrency=2)
    first = agentflow.wait(agentflow.start("tests.browser_approval", {"amount": 1}), timeout=60)
    open_live(operator, asgi_server.url + reverse("admin:agentflow_approval_queue"))
    count = operator.locator("[data-testid=queue-count]")
    expect(count).to_contain_text("1 pending")

    second = agentflow.start("tests.browser_approval", {"amount": 2})

    items = operator.locator("[data-testid=queue-item]")
    expect(items).to_have_count(2)
    expect(count).to_contain_text("2 pending")
    new = items.nth(1)
    expect(new).to_contain_text(str(second.id))
    expect(new.locator("[data-testid=approve]")).to_be_enabled()
    operator.screenshot(path=str(ARTIFACTS / "live-approvals-queue.png"), full_page=True)

    # Deciding on the queue says what happened, and the count follows.
    new.locator("[data-testid=approve]").click()
    expect(new.locator("[data-testid=decide-result]")).to_contain_text("approved by operator")
    expect(count).to_contain_text("1 pending")
    assert agentflow.wait(second).status == Run.Status.SUCCEEDED
    # Decided elsewhere (the API): the first one is marked with who decided it.
    approver = User.objects.create_user("alice", is_staff=True, is_superuser=True)
    agentflow.reject(Approval.objects.get(run=first), by=approver, comment="not this month")
    old = items.nth(0)
    expect(old.locator("[data-testid=decide-result]")).to_contain_text("rejected by alice")
    expect(old.locator("[data-testid=approve]")).to_be_disabled()
    expect(count).to_contain_text("0 pending")
    text = operator.locator("#af-queue").inner_text()
    assert "continues below" not in text and "reload" not in text.lower()
    assert not_reloaded(operator)
    operator.screenshot(path=str(ARTIFACTS / "live-approvals-queue-decided.png"), full_page=True)
    assert operator.problems == []


def test_the_runs_list_shows_new_runs_within_its_filter(workers, operator, asgi_server):
    workers("w1", concurrency=2)
    url = asgi_server.url + reverse("admin:agentflow_run_changelist") + "?agent__exact=tests.asker"
    open_live(operator, url)
    other = agentflow.start("tests.browser_approval", {"amount": 3})
    run = agentflow.start("tests.asker")

    badge = operator.locator(f'[data-run-status="{run.id}"]')
    expect(badge).to_have_text("waiting")  # came in live, then moved on
    agentflow.wait(other)
    expect(operator.locator(f'[data-run-status="{other.id}"]')).to_have_count(0)
    agentflow.approve(Approval.objects.get(run=run), by=User.objects.get(username="operator"))
    expect(badge).to_have_text("succeeded")
    expect(operator.locator("#result_list")).to_contain_text(str(run.id))
    assert not_reloaded(operator)
    operator.screenshot(path=str(ARTIFACTS / "live-runs-list.png"), full_page=True)
    assert operator.problems == []


def test_five_thousand_children_cost_a_few_fetches_and_the_children_page_follows(
    workers, operator, asgi_server
):
    workers("w1", concurrency=4)
    workers("w2", concurrency=4)
    run = agentflow.start("tests.live_gated_fan", {"flag": "live-fan", "n": 5000})
    wait_until(
        lambda: Run.objects.get(id=run.id).steps.filter(position=0).exists(),
        timeout=60,
        what="the run to reach its gate",
    )
    open_live(operator, asgi_server.url + reverse("admin:agentflow_run_change", args=[run.id]))
    fetched = count_live_fetches(operator)
    started = time.monotonic()
    Flag.objects.create(name="live-fan")
    wait_until(
        lambda: Run.objects.get(id=run.id).steps.filter(position=1, index__isnull=True).exists(),
        timeout=60,
        what="the fan-out to start",
    )
    children = operator.context.new_page()
    children.on("pageerror", lambda error: operator.problems.append(f"children: {error}"))
    open_live(children, asgi_server.url + reverse("admin:agentflow_run_children", args=[run.id, 1]))
    # Children write no events: the pages poll while they run, so their counts move.
    done = children.locator("[data-testid=filter-succeeded]")
    seen: set[str] = set()

    def counts_moved() -> bool:
        seen.add(done.inner_text())
        return Run.objects.get(id=run.id).finished_at is not None

    wait_until(counts_moved, timeout=600, what="the children to finish")
    print(f"the children page showed {sorted(seen)} while the children ran")
    # The rendering, the refresh on connect, and at least one poll while the children ran.
    moving = {text for text in seen if "(5000)" not in text}
    assert len(moving) >= 3, f"the children page showed only {seen} while the children ran"
    assert agentflow.wait(run, timeout=600).status == Run.Status.SUCCEEDED
    expect(operator.locator("#af-run-status")).to_have_text("succeeded")
    fan_row = operator.locator('#af-timeline tr[data-position="1"]')
    expect(fan_row.locator("[data-testid=fanout-counts]")).to_contain_text("5000 done")
    expect(done).to_contain_text("(5000)")
    expect(children.locator("[data-testid=children-parent-status]")).to_have_text("succeeded")
    elapsed = time.monotonic() - started
    print(f"{len(fetched)} live fetches in {elapsed:.1f}s for 5,000 children")
    # About one fetch per poll (1.5 s) at most while the children run, not one per child.
    assert len(fetched) <= 10 + elapsed, f"{len(fetched)} fetches in {elapsed:.1f}s"
    assert not_reloaded(operator) and not_reloaded(children)
    operator.screenshot(path=str(ARTIFACTS / "live-run-page-fan-out.png"), full_page=True)
    children.screenshot(path=str(ARTIFACTS / "live-children-page.png"), full_page=True)
    assert operator.problems == []


def test_a_flood_of_events_costs_a_few_fetches(operator, asgi_server):
    run = Run.objects.create(agent="tests.asker", agent_version="1", input={}, status="running")
    frames: list[str] = []
    operator.on("websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(f)))
    open_live(operator, asgi_server.url + reverse("admin:agentflow_run_change", args=[run.id]))
    fetched = count_live_fetches(operator)
    started = time.monotonic()
    for i in range(5000):
        append_event(run.id, "test.tick", {"i": i})
    last = operator.locator("#af-events li").last
    expect(last).to_have_attribute("data-seq", "5000", timeout=120_000)
    wait_until(
        lambda: operator.evaluate(
            "!(window.agentflow.live.inflight || window.agentflow.live.pending)"
        ),
        timeout=30,
        what="the last refresh",
    )
    elapsed = time.monotonic() - started
    print(f"{len(fetched)} live fetches for 5,000 events in {len(frames)} frames, {elapsed:.1f}s")
    assert len(fetched) <= 8 + elapsed / 1.5, f"{len(fetched)} fetches in {elapsed:.1f}s"
    assert len(fetched) * 4 < len(frames), f"{len(fetched)} fetches for {len(frames)} frames"
    assert not_reloaded(operator)
    assert operator.problems == []


def test_the_schedule_pages_show_a_new_run_live(workers, operator, asgi_server):
    workers("w1", concurrency=2)
    task = agentflow.schedule("tests.tt_scheduled", {"label": "x"}, every=3600, name="live")
    listing = operator
    open_live(listing, asgi_server.url + reverse("admin:agentflow_run_schedules"))
    detail = operator.context.new_page()
    detail.on("pageerror", lambda error: operator.problems.append(f"detail: {error}"))
    open_live(detail, asgi_server.url + reverse("admin:agentflow_run_schedule", args=[task.id]))

    run = schedules.start_now(task)  # what "run now" and a beat tick both do

    for page in (listing, detail):
        expect(page.locator(f'[data-run-status="{run.id}"]')).to_have_text("succeeded")
        assert not_reloaded(page)
    listing.screenshot(path=str(ARTIFACTS / "live-schedules.png"), full_page=True)
    assert operator.problems == []


def test_what_happened_while_the_socket_was_down_shows_on_reconnect(workers, operator, asgi_server):
    """A page refreshes on every (re)connect: here one whose socket has no backlog."""
    workers("w1", concurrency=2)
    task = agentflow.schedule("tests.tt_scheduled", {"label": "y"}, every=3600, name="down")
    sockets: list = []

    def silent_then_real(ws) -> None:
        if sockets:
            ws.connect_to_server()  # the reconnect reaches the server
        sockets.append(ws)  # the first is held open by the test, silent: nothing arrives

    operator.route_web_socket(re.compile(r"/ws/agentflow/runs/"), silent_then_real)
    open_live(operator, asgi_server.url + reverse("admin:agentflow_run_schedules"))
    run = schedules.start_now(task)
    assert agentflow.wait(run).status == Run.Status.SUCCEEDED
    badge = operator.locator(f'[data-run-status="{run.id}"]')
    expect(badge).to_have_count(0)  # the silent socket told the page nothing

    sockets[0].close()  # the connection drops; the page reconnects
    expect(badge).to_have_text("succeeded")
    assert len(sockets) >= 2 and not_reloaded(operator)
    assert operator.problems == []


def test_no_console_template_or_script_asks_for_a_reload():
    """Live pages never tell a person to reload: every panel follows on its own."""
    package = ROOT / "agentflow"
    prompts = []
    for path in sorted((package / "templates").rglob("*.html")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"reload", line, re.IGNORECASE):
                prompts.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    literal = re.compile(r"\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'")
    for path in sorted((package / "static").rglob("*.js")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if any(re.search(r"reload", text, re.IGNORECASE) for text in literal.findall(line)):
                prompts.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert prompts == [], "\n".join(prompts)

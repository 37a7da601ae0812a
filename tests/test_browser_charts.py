"""The run waterfall and the overview page in Chromium (tests/browser.py fixtures).

Rows are written in bulk (no worker is needed to draw what was recorded). Screenshots
land in var/test-artifacts/: waterfall.png, overview.png and their -dark twins.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from agentflow.models import Run
from tests.browser import ARTIFACTS
from tests.test_waterfall import fan_out_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_client")]
expect.set_options(timeout=30_000)


def test_the_waterfall_draws_a_5000_child_fan_out_and_links_to_its_children(operator, asgi_server):
    run = fan_out_run(5000)
    operator.goto(asgi_server.url + reverse("admin:agentflow_run_change", args=[run.id]))
    chart = operator.locator("[data-testid=waterfall-svg]")
    expect(chart).to_be_visible()
    fanout = operator.locator("[data-testid=waterfall-row][data-fanout=true]")
    expect(fanout).to_have_count(1)
    assert 1 <= fanout.locator("rect.af-wf-cell").count() <= 120
    assert chart.locator("rect").count() < 300  # aggregated: not one shape per child
    assert chart.bounding_box()["height"] > 60
    operator.screenshot(path=str(ARTIFACTS / "waterfall.png"), full_page=True)
    operator.emulate_media(color_scheme="dark")  # the admin's dark theme: its variables
    operator.locator("#af-waterfall").screenshot(path=str(ARTIFACTS / "waterfall-dark.png"))
    operator.emulate_media(color_scheme="light")

    fanout.locator("[data-testid=waterfall-link]").click()
    operator.wait_for_url(f"**{reverse('admin:agentflow_run_children', args=[run.id, 1])}")
    expect(operator.locator("[data-testid=step-row]")).to_have_count(50)

    # At 420 px the chart scales down instead of scrolling the page sideways.
    operator.set_viewport_size({"width": 420, "height": 900})
    operator.go_back()
    expect(chart).to_be_visible()
    assert chart.bounding_box()["width"] <= 420
    assert operator.problems == []


def test_the_overview_links_a_bar_to_the_runs_behind_it(operator, asgi_server):
    now = timezone.now()
    for status in ("succeeded", "succeeded", "failed"):
        run = Run.objects.create(agent="tests.charts", agent_version="1", status=status)
        Run.objects.filter(id=run.id).update(started_at=now, finished_at=now + timedelta(seconds=3))
    Run.objects.create(agent="tests.other", agent_version="1", status="failed")
    operator.goto(asgi_server.url + reverse("admin:agentflow_run_changelist"))
    operator.locator("[data-testid=overview-link]").click()
    expect(operator.locator("[data-testid=figure-runs]")).to_be_visible()
    operator.locator("[data-testid=agent-filter] a", has_text="tests.charts").click()
    expect(operator.locator("[data-testid=failure-rate]")).to_have_text("33.3%")
    expect(operator.locator("[data-testid=status-succeeded]")).to_have_text("2")
    operator.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)
    operator.emulate_media(color_scheme="dark")
    operator.screenshot(path=str(ARTIFACTS / "overview-dark.png"), full_page=True)
    operator.emulate_media(color_scheme="light")

    # The failed segment of the runs chart opens the list of exactly that run.
    operator.locator("a[data-testid=runs-segment] rect.af-ov--failed").click()
    operator.wait_for_url("**/agentflow/run/?*status__exact=failed*")
    expect(operator.locator("#result_list tbody tr")).to_have_count(1)
    expect(operator.locator("#result_list tbody")).to_contain_text("tests.charts")
    assert operator.problems == []

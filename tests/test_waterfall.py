"""The run waterfall: bars on a time axis, fan-outs aggregated, waits shaded by cause.

The builder is called directly (shapes, causes, queries), and the run page is opened
through the test client to see it drawn.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from agentflow._console import waterfall
from agentflow.models import Approval, Event, Run, Step

pytestmark = pytest.mark.django_db

T0 = timezone.now().replace(microsecond=0) - timedelta(hours=1)


def at(seconds: float):
    return T0 + timedelta(seconds=seconds)


def new_run(status: str = Run.Status.SUCCEEDED, **fields) -> Run:
    run = Run.objects.create(agent="tests.waterfall", agent_version="1", status=status, **fields)
    Run.objects.filter(id=run.id).update(created_at=T0, started_at=T0)
    run.refresh_from_db()
    return run


def step(run: Run, position: int, kind: str = "call", **fields) -> Step:
    fields.setdefault("status", Step.Status.SUCCEEDED)
    return Step.objects.create(run=run, position=position, kind=kind, name=f"s{position}", **fields)


def fan_out_run(children: int) -> Run:
    """A finished run: a call, then a map of ``children`` spread over 100 s, then a call."""
    run = new_run(finished_at=at(200))
    step(run, 0, started_at=at(0), finished_at=at(1))
    step(run, 1, "map", started_at=at(1), finished_at=at(150))
    statuses = ["succeeded", "succeeded", "succeeded", "failed"]
    Step.objects.bulk_create(
        Step(
            run=run, position=1, index=i, kind="call", name="child",
            status=statuses[i % len(statuses)],
            started_at=at(2 + 100 * i / children), finished_at=at(3 + 100 * i / children),
        )
        for i in range(children)
    )  # fmt: skip
    step(run, 2, started_at=at(150), finished_at=at(200))
    return run


def built(run: Run) -> tuple[waterfall.Waterfall, int]:
    with CaptureQueriesContext(connection) as queries:
        chart = waterfall.build(run)
    return chart, len(queries.captured_queries)


def test_a_5000_child_fan_out_is_drawn_in_bounded_shapes_and_queries():
    _, small_queries = built(fan_out_run(5))
    big = fan_out_run(5000)
    big_chart, big_queries = built(big)
    assert big_queries == small_queries == 4
    assert big_chart.elements < 300, big_chart.elements
    fanout = next(r for r in big_chart.rows if r.fanout)
    assert 1 <= len(fanout.cells) <= waterfall.BUCKETS
    assert "5,000 children: 3,750 done, 0 open, 1,250 failed" in fanout.title
    # The band spans the children's first start to last finish: +2 s to +103 s.
    band = next(b for b in fanout.bars if "af-wf-band" in b.css)
    axis = (waterfall.PLOT_RIGHT - waterfall.PLOT_LEFT) / 200
    assert band.x == pytest.approx(waterfall.PLOT_LEFT + 2 * axis, abs=1)
    assert band.width == pytest.approx(101 * axis, abs=1)
    # The density strip covers the children's start times (+2 s to +102 s) and no more.
    assert min(c.x for c in fanout.cells) == pytest.approx(waterfall.PLOT_LEFT + 2 * axis, abs=6)
    assert max(c.x + c.width for c in fanout.cells) <= waterfall.PLOT_LEFT + 103 * axis + 6
    assert fanout.href == reverse("admin:agentflow_run_children", args=[big.id, 1])


def test_waits_are_shaded_by_cause():
    now = timezone.now()
    run = new_run(status=Run.Status.PAUSED, wait_reason="Budget 'daily' is exhausted")
    step(run, 0, "approval", started_at=at(0), finished_at=at(60))
    step(run, 1, "sleep", started_at=at(60), finished_at=at(120), wake_at=at(120))
    step(run, 2, "wait", started_at=at(120), finished_at=at(130))
    step(run, 3, started_at=at(130), finished_at=at(200))
    asked = step(run, 4, started_at=at(200), finished_at=at(300))
    Approval.objects.create(run=run, step=asked, position=4, title="Pay", decided_at=at(290))
    Approval.objects.filter(position=4).update(created_at=at(205))
    events = [
        (1, "step.throttled", {"position": 3, "wake_at": at(170).isoformat()}, at(131)),
        (2, "run.paused", {"reason": "budget"}, at(300)),
    ]
    for seq, type_, data, created in events:
        event = Event.objects.create(run=run, seq=seq, type=type_, data=data)
        Event.objects.filter(id=event.id).update(created_at=created)
    chart = waterfall.build(run)
    causes = {r.label.split(" ·")[0]: {w.cause for w in r.waits} for r in chart.rows}
    assert causes == {
        "run": {"budget"},
        "0": {"person"},
        "1": {"timer"},
        "2": {"signal"},
        "3": {"rate"},
        "4": {"person"},
    }
    assert [c for c, _ in chart.causes] == ["person", "timer", "signal", "rate", "budget"]
    rate = next(r for r in chart.rows if r.label.startswith("3 ")).waits[0]
    bar = next(r for r in chart.rows if r.label.startswith("3 ")).bars[0]
    # Throttled from +131 s to +170 s of a 130-200 s step: the first 39 of its 70 s.
    assert rate.width / bar.width == pytest.approx(39 / 70, rel=0.05)
    assert chart.pauses and chart.end >= now  # paused still: the pause runs to now


def test_more_steps_than_fit_draw_the_last_ones_with_a_note(admin_client):
    run = new_run(finished_at=at(300))
    Step.objects.bulk_create(
        Step(
            run=run, position=i, kind="call", name="s", status="succeeded",
            started_at=at(i), finished_at=at(i + 1),
        )
        for i in range(waterfall.MAX_ROWS + 50)
    )  # fmt: skip
    chart, queries = built(run)
    assert queries == 4 and chart.hidden == 50
    assert len(chart.rows) == waterfall.MAX_ROWS + 1  # the run's own row first
    html = admin_client.get(reverse("admin:agentflow_run_change", args=[run.id])).content.decode()
    assert "The first 50 steps are not drawn" in html
    # A step on the timeline's page links to its row; one on another page, to that page.
    assert 'href="#step-249"' in html and 'href="?page=1#step-50"' in html


def test_the_run_page_draws_the_waterfall_escaped(admin_client):
    run = fan_out_run(50)
    Step.objects.filter(run=run, position=0).update(name="<script>alert(1)</script>")
    response = admin_client.get(reverse("admin:agentflow_run_change", args=[run.id]))
    html = response.content.decode()
    section = re.search(r'<section id="af-waterfall".*?</section>', html, re.S).group(0)
    assert 'data-af-live="waterfall"' in section and 'data-testid="waterfall"' in section
    assert "<svg" in section and "<script" not in section and "&lt;script&gt;" in section
    assert section.count('data-testid="waterfall-row"') == 4
    children = reverse("admin:agentflow_run_children", args=[run.id, 1])
    assert f'href="{children}"' in section
    assert "+0 s" in section  # a human axis


def test_a_run_without_steps_says_so(admin_client):
    run = new_run(status=Run.Status.PENDING)
    html = admin_client.get(reverse("admin:agentflow_run_change", args=[run.id])).content.decode()
    assert 'data-testid="waterfall-empty"' in html

"""The overview page: figures over a known set of runs, their links, permissions, queries.

Runs are written in bulk with fixed times relative to now, so every figure's number is
known; opening a figure's link must list exactly the runs (or approvals) it counted.
"""

from __future__ import annotations

import re
from datetime import UTC, timedelta
from decimal import Decimal
from html import unescape

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from agentflow._console import figures
from agentflow._console.csp import POLICY
from agentflow.models import Approval, Budget, BudgetSpend, Run, Step

pytestmark = pytest.mark.django_db

URL = reverse("admin:agentflow_run_overview")


def staff(username: str, *codenames: str) -> Client:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def make_run(agent: str, status: str, age: timedelta, took: float | None = None, **fields) -> Run:
    """A run created ``age`` ago; a finished one took ``took`` seconds."""
    created = timezone.now() - age
    run = Run.objects.create(agent=agent, agent_version="1", status=status, **fields)
    finished = created + timedelta(seconds=took) if took is not None else None
    Run.objects.filter(id=run.id).update(
        created_at=created, started_at=created, finished_at=finished
    )
    return run


@pytest.fixture
def known():
    """Runs of two agents in the last 24 h (and older ones that must not count)."""
    now = timezone.now()
    # Keep every run of the data set inside one hour bucket: 10 minutes ago.
    age = timedelta(minutes=min(10, now.minute)) if now.minute else timedelta(0)
    a = [make_run("alpha", "succeeded", age, took=t) for t in (1, 2, 3, 4)]
    a.append(make_run("alpha", "failed", age, took=10))
    b = [make_run("beta", "succeeded", age, took=100), make_run("beta", "waiting", age)]
    old = make_run("alpha", "failed", timedelta(days=3), took=5)
    for run in a[:2]:
        Step.objects.create(
            run=run, position=0, kind="llm", name="m", status="succeeded",
            started_at=now - age, finished_at=now - age + timedelta(seconds=2),
            cost=Decimal("0.25"), input_tokens=100, output_tokens=50,
        )  # fmt: skip
    Step.objects.create(
        run=b[0], position=0, kind="call", name="t", status="succeeded",
        started_at=now - age, finished_at=now - age + timedelta(seconds=4), cost=Decimal("1.5"),
    )  # fmt: skip
    waiting = Step.objects.create(
        run=b[1], position=0, kind="approval", name="ok?", status="waiting", started_at=now
    )
    for i, minutes in enumerate((1, 30, 120, 60 * 48)):
        approval = Approval.objects.create(
            run=b[1] if i else a[0],
            step=waiting if i == 1 else None,
            position=i,
            title=f"q{i}",
        )
        Approval.objects.filter(id=approval.id).update(created_at=now - timedelta(minutes=minutes))
    return {"alpha": a, "beta": b, "old": old}


def overview(client: Client, **params) -> tuple[str, dict]:
    response = client.get(URL, params)
    assert response.status_code == 200, response.status_code
    assert response["Content-Security-Policy"] == POLICY
    return response.content.decode(), response.context["overview"]


def listed(client: Client, href: str) -> set:
    """The ids the admin list at ``href`` shows (every page's worth: the whole queryset)."""
    response = client.get(unescape(href))
    assert response.status_code == 200, (href, response.status_code)
    assert "?e=1" not in response.get("Location", "")
    return set(response.context["cl"].queryset.values_list("id", flat=True))


def test_figures_count_the_known_runs(admin_client, known):
    html, o = overview(admin_client)
    assert o.total == 7  # the 3-day-old run is outside the last 24 h
    assert {s: n.value for s, n in o.by_status.items() if n.value != "0"} == {
        "succeeded": "5",
        "failed": "1",
        "waiting": "1",
    }
    assert o.failure.value == "16.7%" and o.failure.note == "1 failed of 6 finished"
    durations = {n.testid: n.value for n in o.durations}
    # Runs took 1, 2, 3, 4, 10, 100 s: p50 = 3.5 s; p95 = 10 + 0.75 * 90 = 77.5 s.
    assert durations["p50-run"] == "3.5 s" and durations["p95-run"] == "1 min 17 s"
    # Work steps took 2, 2, 4 s (the approval wait is left out).
    assert durations["p50-step"] == "2.0 s" and durations["p95-step"] == "3.8 s"
    today = [d for d in o.days if d["cost"]]
    assert sum(d["cost"] for d in today) == Decimal("2.0")
    assert sum(d["input"] for d in today) == 200
    assert [n.value for n in o.approvals] == ["1", "1", "1", "1"]
    for figure in ("runs", "failure-rate", "durations", "spend", "tokens", "approvals"):
        assert f'data-testid="figure-{figure}"' in html
    assert "<svg" in html and "<script>" not in html


def test_one_agents_overview_counts_only_its_runs(admin_client, known):
    _, o = overview(admin_client, agent="beta", period="7d")
    assert o.total == 2
    assert o.failure.value == "0.0%"
    assert [n.value for n in o.approvals] == ["0", "1", "1", "1"]
    _, o = overview(admin_client, agent="alpha", period="7d")
    assert o.total == 6  # with the 3-day-old failure
    assert o.by_status["failed"].value == "2"


def test_every_link_lists_exactly_the_runs_it_counts(admin_client, known):
    html, o = overview(admin_client)
    alpha, beta = known["alpha"], known["beta"]
    assert listed(admin_client, o.by_status["succeeded"].href) == {
        r.id for r in alpha[:4] + beta[:1]
    }
    assert listed(admin_client, o.failure.href) == {alpha[4].id}
    durations = {n.testid: n.href for n in o.durations}
    finished = {r.id for r in alpha + beta[:1]}
    assert listed(admin_client, durations["p50-run"]) == finished
    with_steps = {alpha[0].id, alpha[1].id, beta[0].id, beta[1].id}
    assert listed(admin_client, durations["p95-step"]) == with_steps
    segments = [s for s in o.runs.shapes if s.testid == "runs-segment"]
    assert sum(len(listed(admin_client, s.href)) for s in segments) == 7
    hrefs = re.findall(r'<a href="([^"]+)" data-testid="runs-segment"', html)
    assert len(hrefs) == len(segments) == 3  # one bucket: succeeded, failed, waiting
    # Per agent: links carry the agent too.
    _, beta_o = overview(admin_client, agent="beta")
    assert listed(admin_client, beta_o.by_status["succeeded"].href) == {beta[0].id}
    spend = [s for s in beta_o.spend.shapes]
    assert len(spend) == 1 and listed(admin_client, spend[0].href) == {r.id for r in beta}
    # Approvals by age: the approvals list, filtered the same way.
    ages = [admin_client.get(unescape(n.href)) for n in beta_o.approvals]
    assert [r.context["cl"].result_count for r in ages] == [0, 1, 1, 1]


def test_the_runs_list_and_the_app_index_link_to_the_overview(admin_client, known):
    html = admin_client.get(reverse("admin:agentflow_run_changelist")).content.decode()
    assert f'href="{URL}" data-testid="overview-link"' in html
    index = reverse("admin:app_list", kwargs={"app_label": "agentflow"})
    html = admin_client.get(index).content.decode()
    assert f'href="{URL}" data-testid="overview-link"' in html
    assert 'data-testid="overview-link"' not in staff("nobody").get(index).content.decode()


def test_without_the_view_permission_the_overview_is_refused(known):
    assert staff("nobody").get(URL).status_code == 403
    assert staff("viewer", "view_run").get(URL).status_code == 200


def test_the_view_rule_narrows_every_figure(settings, known):
    settings.AGENTFLOW = {**settings.AGENTFLOW, "RUN_VIEW_RULE": "tests.test_overview.only_beta"}
    client = staff("beta-viewer", "view_run", "view_approval")
    _, o = overview(client)
    assert o.total == 2
    assert o.by_status["failed"].value == "0"
    assert [n.value for n in o.approvals] == ["0", "1", "1", "1"]
    assert sum(d["cost"] for d in o.days) == Decimal("1.5")
    # The rule without a queryset form is asked run by run: the same figures.
    settings.AGENTFLOW = {**settings.AGENTFLOW, "RUN_VIEW_RULE": "tests.test_overview.beta_only"}
    _, o = overview(client)
    assert o.total == 2


def only_beta(user, run) -> bool:
    return run.agent == "beta"


only_beta.queryset = lambda user, runs: runs.filter(agent="beta")  # type: ignore[attr-defined]


def beta_only(user, run) -> bool:
    return run.agent == "beta"


def test_budgets_are_drawn_against_daily_spend(admin_client, known):
    budget = Budget.objects.create(name="daily", period="day", max_cost=Decimal("1.75"))
    today = timezone.now().astimezone(UTC)
    BudgetSpend.objects.create(budget=budget, window=f"day:{today:%Y-%m-%d}", cost=Decimal("2"))
    html, o = overview(admin_client)
    assert [line.text for line in o.spend.lines if line.css == "af-ov-limit"] == ["daily: $1.75"]
    assert 'data-testid="budget-row"' in html and "af-over" in html
    # Budgets are shown to those who may view them only.
    html = staff("viewer", "view_run").get(URL).content.decode()
    assert 'data-testid="figure-budgets"' not in html


def test_the_query_count_does_not_grow_with_the_runs(admin_client, known):
    admin_client.get(URL)  # warm caches
    with CaptureQueriesContext(connection) as few:
        admin_client.get(URL)
    Run.objects.bulk_create(
        Run(agent=f"bulk{i % 3}", agent_version="1", status="succeeded") for i in range(500)
    )
    with CaptureQueriesContext(connection) as many:
        admin_client.get(URL, {"period": "30d"})
    assert len(many.captured_queries) == len(few.captured_queries)


def test_buckets_end_with_the_one_that_holds_now():
    now = timezone.now().astimezone(UTC).replace(hour=13, minute=7)
    for key, count in (("24h", 24), ("7d", 28), ("30d", 30)):
        period = figures.PERIODS[key]
        since, n = figures.window(period, now)
        assert n == count
        assert since + (n - 1) * period.bucket <= now < since + n * period.bucket


@pytest.mark.parametrize("n", [1, 2, 7, 40])
def test_the_sqlite_percentiles_match_postgresql_percentile_cont(monkeypatch, n):
    from django.db.models import DurationField, ExpressionWrapper, F

    from agentflow._console import percentiles

    for i in range(n):
        make_run("p", "succeeded", timedelta(minutes=1), took=(i * 7919) % 101 + 0.25)
    rows = Run.objects.filter(agent="p")
    took = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    fractions = (0.0, 0.5, 0.95, 1.0)
    native = percentiles.durations(rows, took, fractions)

    class Fallback:
        vendor = "sqlite"

    monkeypatch.setattr(percentiles, "connections", {"default": Fallback()})
    assert percentiles.durations(rows, took, fractions) == native
    assert percentiles.durations(rows.none(), took, fractions) == (0, [None] * 4)

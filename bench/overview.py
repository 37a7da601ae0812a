"""The admin overview page: server time and SQL queries with 100,000 runs in the table.

Runs are written in bulk over the last 30 days (ten agents, every status), with two steps
each (a model call with tokens and cost, and a tool call), pending and decided approvals
of every age, and daily and monthly budgets with a spend row per window. The overview is
rendered through Django's test client (session, permissions, queries, template) for each
period, for the whole site and for one agent; the median of the repeats is reported with
the number of queries, which must not grow with the runs. Goal: under 0.5 s.
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import timedelta
from decimal import Decimal

from bench.common import django_site, report

GOAL_S = 0.5
AGENTS = 10
# Of every 100 runs: how many end (or stand) in each status.
MIX = (
    ("succeeded", 85), ("failed", 8), ("cancelled", 2), ("waiting", 2),
    ("paused", 1), ("running", 1), ("pending", 1),
)  # fmt: skip


def status_of(i: int) -> str:
    slot = i % 100
    for status, share in MIX:
        if slot < share:
            return status
        slot -= share
    raise AssertionError("MIX adds up to 100")


def populate(size: int) -> None:
    """``size`` runs over the last 30 days, with their steps, approvals and budget spend."""
    from django.db import connection
    from django.utils import timezone

    from agentflow.models import Approval, Budget, BudgetSpend, Run, Step

    now = timezone.now()
    span = timedelta(days=30)
    batch = 5000
    for first in range(0, size, batch):
        runs, steps = [], []
        for i in range(first, min(first + batch, size)):
            created = now - span + span * (i / size)
            status = status_of(i)
            done = status in Run.TERMINAL
            run = Run(
                agent=f"bench.agent{i % AGENTS}",
                agent_version="1",
                status=status,
                created_at=created,
                started_at=created + timedelta(milliseconds=100),
                finished_at=created + timedelta(seconds=1 + i % 600) if done else None,
            )
            runs.append(run)
            steps.append(
                Step(
                    run=run,
                    position=0,
                    kind="llm",
                    name="default",
                    status="succeeded",
                    started_at=created,
                    finished_at=created + timedelta(seconds=1 + i % 7),
                    input_tokens=200 + i % 50,
                    output_tokens=80 + i % 20,
                    cost=Decimal("0.0012"),
                )
            )
            steps.append(
                Step(
                    run=run,
                    position=1,
                    kind="call",
                    name="bench.tool",
                    status="succeeded" if done else "running",
                    started_at=created + timedelta(seconds=8),
                    finished_at=created + timedelta(seconds=8.5) if done else None,
                )
            )
        Run.objects.bulk_create(runs, batch_size=batch)
        Step.objects.bulk_create(steps, batch_size=batch)
    # created_at is auto_now_add: set the spread-out times in one statement.
    waiting = list(Run.objects.filter(status="waiting").values_list("id", flat=True))
    approvals = [
        Approval(run_id=run_id, position=2, title="bench", status="pending") for run_id in waiting
    ]
    decided = Run.objects.filter(status="succeeded").values_list("id", flat=True)[: size // 20]
    approvals += [
        Approval(run_id=run_id, position=2, title="bench", status="approved", decided_at=now)
        for run_id in decided
    ]
    Approval.objects.bulk_create(approvals, batch_size=batch)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE agentflow_run SET created_at = started_at - interval '100 milliseconds'"
        )
        # Pending approvals of every age: from a minute to three days old.
        cursor.execute(
            "UPDATE agentflow_approval SET created_at = now() - (id % 4320) * interval '1 minute'"
        )
    budgets = [
        Budget.objects.create(name="site per day", period="day", max_cost=Decimal("40")),
        Budget.objects.create(
            name="agent0 per day", period="day", agent="bench.agent0", max_cost=Decimal("5")
        ),
        Budget.objects.create(
            name="agents per day", period="day", agent="bench.*", max_input_tokens=10_000_000
        ),
        Budget.objects.create(name="site per month", period="month", max_cost=Decimal("900")),
    ]
    spends = []
    for budget in budgets[:3]:
        for day in range(31):
            at = now - timedelta(days=day)
            spends.append(
                BudgetSpend(budget=budget, window=f"day:{at:%Y-%m-%d}", cost=Decimal("4.2"))
            )
    spends.append(BudgetSpend(budget=budgets[3], window=f"month:{now:%Y-%m}", cost=Decimal(80)))
    BudgetSpend.objects.bulk_create(spends)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def main(size: int, repeats: int) -> None:
    django_site("agentflow_bench_overview")
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    start = time.perf_counter()
    populate(size)
    print(f"  wrote {size:,} runs in {time.perf_counter() - start:.1f} s", file=sys.stderr)

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(User.objects.create_superuser("bench", "bench@example.com", "pw"))
    url = reverse("admin:agentflow_run_overview")

    def measure(params: dict) -> tuple[float, int]:
        client.get(url, params)  # warm: templates, content types
        times = []
        for _ in range(repeats):
            with CaptureQueriesContext(connection) as queries:
                began = time.perf_counter()
                response = client.get(url, params)
                times.append(time.perf_counter() - began)
            assert response.status_code == 200, response.status_code
            assert b'data-testid="figure-runs"' in response.content
        return statistics.median(times), len(queries.captured_queries)

    results: dict[str, float] = {"overview_runs": size}
    for key, params in (
        ("24h", {"period": "24h"}),
        ("7d", {"period": "7d"}),
        ("30d", {"period": "30d"}),
        ("30d_agent", {"period": "30d", "agent": "bench.agent0"}),
    ):
        seconds, queries = measure(params)
        results[f"overview_{key}_s"] = seconds
        results[f"overview_{key}_queries"] = queries
        verdict = "met" if seconds < GOAL_S else "MISSED"
        print(
            f"  overview {key:<10} {seconds * 1000:7.1f} ms  {queries} queries  "
            f"(goal < {GOAL_S * 1000:.0f} ms: {verdict})",
            file=sys.stderr,
        )
    report(results)


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 100_000,
        int(sys.argv[2]) if len(sys.argv) > 2 else 5,
    )

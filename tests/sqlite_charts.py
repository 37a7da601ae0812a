"""Render the overview and a fan-out's waterfall on SQLite (the demo's database).

Run by tests/test_charts_sqlite.py in a process of its own, with AGENTFLOW_VAR_DIR set to
an empty directory: migrates a fresh SQLite file, writes runs, opens both pages through
Django's test client and prints one JSON line of what it found.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from decimal import Decimal

os.environ["DJANGO_SETTINGS_MODULE"] = "apps.project.settings"

import django

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402
from django.urls import reverse  # noqa: E402
from django.utils import timezone  # noqa: E402

from agentflow.models import Approval, Run, Step  # noqa: E402


def main() -> None:
    setup_test_environment()
    call_command("migrate", verbosity=0)
    now = timezone.now()
    runs = []
    for i, took in enumerate((1, 2, 3, 4, 10, 100)):
        run = Run.objects.create(agent="sq", agent_version="1", status="succeeded")
        start = now - timedelta(minutes=5)
        Run.objects.filter(id=run.id).update(
            created_at=start, started_at=start, finished_at=start + timedelta(seconds=took)
        )
        Step.objects.create(
            run=run, position=0, kind="call", name="t", status="succeeded", started_at=start,
            finished_at=start + timedelta(seconds=i + 1), cost=Decimal("0.5"), input_tokens=10,
        )  # fmt: skip
        runs.append(run)
    Approval.objects.create(run=runs[0], position=1, title="q")
    fan = Run.objects.create(agent="fan", agent_version="1", status="waiting")
    Step.objects.create(
        run=fan,
        position=0,
        kind="map",
        name="m",
        status="waiting",
        started_at=now - timedelta(seconds=60),
    )
    Step.objects.bulk_create(
        Step(
            run=fan, position=0, index=i, kind="call", name="c",
            status="succeeded" if i % 2 else "running",
            started_at=now - timedelta(seconds=60 - i * 0.01),
            finished_at=now - timedelta(seconds=50 - i * 0.01) if i % 2 else None,
        )
        for i in range(2000)
    )  # fmt: skip
    client = Client()
    client.force_login(User.objects.create_superuser("sq", "sq@example.com", "pw"))
    url = reverse("admin:agentflow_run_overview")
    everything = client.get(url, {"period": "7d"})
    with CaptureQueriesContext(connection) as queries:
        overview = client.get(url, {"period": "7d", "agent": "sq"})
    page = client.get(reverse("admin:agentflow_run_change", args=[fan.id]))
    o = overview.context["overview"]
    html = page.content.decode()
    print(
        "RESULT "
        + json.dumps(
            {
                "vendor": connection.vendor,
                "overview_status": overview.status_code,
                "page_status": page.status_code,
                "total_all": everything.context["overview"].total,
                "total": o.total,
                "durations": {n.testid: n.value for n in o.durations},
                "cost": str(sum(d["cost"] for d in o.days)),
                "approvals": [n.value for n in o.approvals],
                "queries": len(queries.captured_queries),
                "waterfall_rows": html.count('data-testid="waterfall-row"'),
                "density_cells": html.count("af-wf-cell "),
            }
        )
    )


if __name__ == "__main__":
    main()

"""The admin run page: server time and SQL queries for runs of 50 and 5,000 steps.

Three runs are written in bulk: 50 top-level steps, 5,000 top-level steps, and one
fan-out of 5,000 children. Each page is rendered through Django's test client (the whole
request: session, permissions, queries, template), and the median of the repeats is
reported with the number of queries, which must not grow with the run.
"""

from __future__ import annotations

import statistics
import sys
import time

from bench.common import django_site, report


def main(size: int, repeats: int) -> None:
    django_site("agentflow_bench_run_page")
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from agentflow.models import Run, Step

    output = {"text": "<script>alert(1)</script>", "rows": list(range(20))}

    def run_of(steps: int, fan_out: bool) -> Run:
        run = Run.objects.create(agent="bench", agent_version="1", status="waiting")
        if fan_out:
            Step.objects.create(run=run, position=0, kind="map", name="bench.t", status="waiting")
        Step.objects.bulk_create(
            (
                Step(
                    run=run,
                    position=0 if fan_out else i,
                    index=i if fan_out else None,
                    kind="call",
                    name="bench.t",
                    status="succeeded" if i % 3 else "running",
                    args={"i": i},
                    output=output,
                )
                for i in range(steps)
            ),
            batch_size=1000,
        )
        return run

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(User.objects.create_superuser("bench", "bench@example.com", "pw"))

    def measure(run: Run) -> tuple[float, int]:
        url = reverse("admin:agentflow_run_change", args=[run.id])
        client.get(url)  # warm: templates, content types
        times = []
        for _ in range(repeats):
            with CaptureQueriesContext(connection) as queries:
                start = time.perf_counter()
                response = client.get(url)
                times.append(time.perf_counter() - start)
            assert response.status_code == 200, response.status_code
        return statistics.median(times), len(queries.captured_queries)

    small_s, small_q = measure(run_of(50, fan_out=False))
    long_s, long_q = measure(run_of(size, fan_out=False))
    fan_s, fan_q = measure(run_of(size, fan_out=True))
    report(
        {
            "run_page_50_s": small_s,
            "run_page_steps_s": long_s,
            "run_page_fan_out_s": fan_s,
            "run_page_50_queries": small_q,
            "run_page_steps_queries": long_q,
            "run_page_fan_out_queries": fan_q,
        }
    )


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 5000,
        int(sys.argv[2]) if len(sys.argv) > 2 else 5,
    )

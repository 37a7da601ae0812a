"""Fan-out end to end against a raw Celery chord, and rate-limit utilisation.

Both run on the same two worker processes (concurrency 4 each), the same Redis broker
and result backend, and the same PostgreSQL, started here for this measurement.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import fresh_database, report

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")


def start_workers(log_dir: Path) -> list[subprocess.Popen]:
    processes = []
    for name in ("b1", "b2"):
        log = open(log_dir / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "apps.project",
                    "worker",
                    "-P",
                    "prefork",
                    "-c",
                    "4",
                    "-n",
                    f"{name}@%h",
                    "-l",
                    "WARNING",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                cwd=ROOT,
                env=os.environ.copy(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return processes


def main(n: int, repeats: int, rated: int) -> None:
    os.environ["BENCH_DATABASE_URL"] = fresh_database("agentflow_bench_fanout")
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    os.environ["REDIS_URL"] = REDIS_URL
    import django

    django.setup()
    import redis
    from celery import chord
    from django.core.management import call_command

    import agentflow
    from bench.tasks import raw_callback, raw_noop

    call_command("migrate", verbosity=0)
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    log_dir = Path(os.environ.get("BENCH_LOG_DIR", "/tmp"))
    workers = start_workers(log_dir)
    try:
        raw_noop.delay(0).get(timeout=60)  # both workers are up and connected
        agentflow.wait(agentflow.start("bench.fan_out", {"n": 10}), timeout=60)
        raw_times, agentflow_times = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            chord(raw_noop.si(i) for i in range(n))(raw_callback.s()).get(timeout=300)
            raw_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            run = agentflow.wait(agentflow.start("bench.fan_out", {"n": n}), timeout=300)
            agentflow_times.append(time.perf_counter() - started)
            assert run.status == "succeeded", run.error
        run = agentflow.wait(agentflow.start("bench.rated_fan_out", {"n": rated}), timeout=300)
        assert run.status == "succeeded", run.error
        starts = sorted(float(x) for x in client.lrange("bench:starts", 0, -1))
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            worker.wait(30)
    over = sum(1 for i, t in enumerate(starts) if sum(1 for u in starts[i:] if u < t + 1.0) > 20)
    achieved = (len(starts) - 1) / (starts[-1] - starts[0])
    report(
        {
            "raw_chord_s": statistics.median(raw_times),
            "agentflow_fan_out_s": statistics.median(agentflow_times),
            "rate_utilisation": achieved / 20,
            "rate_windows_over": over,
        }
    )


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))

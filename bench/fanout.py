"""Fan-out end to end against a raw Celery chord at several sizes, and rate-limit utilisation.

Both run on the same two worker processes (concurrency 4 each), the same Redis broker
and result backend, and the same PostgreSQL, started here for this measurement. A
fan-out is timed from ``agentflow.start`` until its run row is finished, a chord from
sending it until its callback's result is stored (both polled every 5 ms).

    python -m bench.fanout SIZES REPEATS RATED   (SIZES: comma-separated, e.g. 100,1000,5000)
"""

from __future__ import annotations

import statistics
import sys
import time

from bench.common import (
    REDIS_URL,
    celery_workers,
    django_site,
    processes,
    report,
    results_end,
    runs_end,
)


def chord_seconds(n: int) -> float:
    """Seconds from sending a raw chord of ``n`` no-ops plus callback to the callback's result."""
    from celery import chord

    from bench.tasks import raw_callback, raw_noop

    started = time.perf_counter()
    result = chord(raw_noop.si(i) for i in range(n))(raw_callback.s())
    return results_end([result.id], 600, f"raw chord of {n}") - started


def fan_out_seconds(n: int) -> float:
    """Seconds from ``agentflow.start`` of a ``ctx.map`` of ``n`` no-ops to its run's end."""
    import agentflow

    started = time.perf_counter()
    agentflow.start("bench.fan_out", {"n": n})
    return runs_end(600, f"fan-out of {n}") - started


def main(sizes: list[int], repeats: int, rated: int) -> None:
    django_site("agentflow_bench_fanout", redis=True)
    import redis

    import agentflow
    from bench.tasks import raw_noop

    results: dict[str, float] = {}
    with processes(celery_workers(["b1", "b2"], 4)):
        raw_noop.delay(0).get(timeout=60)  # both workers are up and connected
        chord_seconds(10)
        fan_out_seconds(10)
        for n in sizes:
            raw_times, agentflow_times = [], []
            for _ in range(repeats):
                raw_times.append(chord_seconds(n))
                agentflow_times.append(fan_out_seconds(n))
            results[f"raw_chord_{n}_s"] = statistics.median(raw_times)
            results[f"agentflow_fan_out_{n}_s"] = statistics.median(agentflow_times)
        run = agentflow.wait(agentflow.start("bench.rated_fan_out", {"n": rated}), timeout=300)
        assert run.status == "succeeded", run.error
        stamps = redis.Redis.from_url(REDIS_URL).lrange("bench:starts", 0, -1)
    starts = sorted(float(x) for x in stamps)
    over = sum(1 for i, t in enumerate(starts) if sum(1 for u in starts[i:] if u < t + 1.0) > 20)
    achieved = (len(starts) - 1) / (starts[-1] - starts[0])
    report(results | {"rate_utilisation": achieved / 20, "rate_windows_over": over})


if __name__ == "__main__":
    main([int(n) for n in sys.argv[1].split(",")], int(sys.argv[2]), int(sys.argv[3]))

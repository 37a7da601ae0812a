"""Runs per second through a real Celery worker: agentflow 3-step runs, raw 3-task chains.

One ``celery worker`` with 2 prefork processes on the Redis broker and result backend and
this machine's PostgreSQL, started here and stopped afterwards. A batch of RUNS counts
from its first start call until its last one is seen finished (polled every 5 ms); the
two systems' batches alternate for ROUNDS rounds, so both see the same machine load, and
the median rate of each is reported:

- agentflow: ``agentflow.start("bench.three")`` for each run (its row, its event and its
  advance message); done when no run row is active any more (and every one SUCCEEDED).
- raw Celery: ``chain(noop, noop, noop).apply_async()`` for each; done when every last
  task's result is in the result backend.

bench.dbos_queues measures DBOS queues on the same machine.

    python -m bench.throughput RUNS ROUNDS
"""

from __future__ import annotations

import sys
import time
from statistics import median

from bench.common import celery_workers, django_site, processes, report, results_end, runs_end


def agentflow_per_s(runs: int) -> float:
    """agentflow 3-step runs per second, from the first start to the last success."""
    import agentflow

    started = time.perf_counter()
    for _ in range(runs):
        agentflow.start("bench.three")
    return runs / (runs_end(600, "agentflow runs") - started)


def raw_chain_per_s(chains: int) -> float:
    """Raw Celery chains of 3 no-op tasks per second, from the first send to the last result."""
    from celery import chain

    from bench.tasks import raw_noop

    started = time.perf_counter()
    last = [
        chain(raw_noop.si(0), raw_noop.si(1), raw_noop.si(2)).apply_async().id
        for _ in range(chains)
    ]
    return chains / (results_end(last, 600, "raw Celery chains") - started)


def main(runs: int, rounds: int) -> None:
    django_site("agentflow_bench_throughput", redis=True)
    with processes(celery_workers(["t1"], 2)):
        raw_chain_per_s(20)  # the worker's processes are up, connected and warm
        agentflow_per_s(20)
        raw, agentflow = [], []
        for _ in range(rounds):
            raw.append(raw_chain_per_s(runs))
            agentflow.append(agentflow_per_s(runs))
    report({"raw_chain_per_s": median(raw), "agentflow_per_s": median(agentflow)})


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))

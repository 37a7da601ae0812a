"""The DBOS application the benchmarks run (DBOS's counterpart of bench/agents.py).

    python -m bench.dbos_app URL EXECUTOR_ID POLLING_SECONDS

runs it as a queue worker service, the way DBOS's queue-worker example does: launch DBOS,
then dequeue and execute workflows until killed, while clients enqueue with DBOSClient.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

from dbos import DBOS

NAME = "agentflow-bench"
QUEUE = "bench"
# Step timestamps of the in-process per-step benchmark.
stamps: list[float] = []


@DBOS.step()
def tick(i: int) -> int:
    stamps.append(time.perf_counter())
    return i


@DBOS.workflow()
def long_workflow(n: int) -> int:
    for i in range(n):
        tick(i)
    return n


@DBOS.workflow()
def three() -> int:
    return sum(tick(i) for i in range(3))


def launch(url: str, **config: Any) -> None:
    """Configure and launch DBOS on the system database ``url``, quietly."""
    DBOS(config={"name": NAME, "system_database_url": url, "log_level": "WARNING", **config})
    logging.getLogger("dbos").setLevel(logging.WARNING)
    DBOS.launch()


def serve(url: str, executor_id: str, polling: float) -> None:
    """Work the queue: at most 2 workflows at once in all, one per worker process."""
    launch(url, executor_id=executor_id)
    DBOS.register_queue(
        QUEUE,
        global_concurrency=2,
        worker_concurrency=1,
        polling_interval_sec=polling,
        on_conflict="always_update",
    )
    threading.Event().wait()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2], float(sys.argv[3]))

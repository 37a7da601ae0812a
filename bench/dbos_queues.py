"""DBOS queue throughput: 3-step workflows per second through a queue of concurrency 2.

The counterpart of bench.throughput. Two DBOS worker services (bench.dbos_app, one
workflow at a time each, like 2 prefork processes) dequeue from the system database on
this machine's PostgreSQL; this process enqueues with DBOSClient, as DBOS recommends for
code outside the workers. A batch of WORKFLOWS counts from its first enqueue until its
workflows are all seen SUCCESS (polled every 5 ms); the median rate of ROUNDS batches is
reported.

DBOS queues are polled: a worker looks for work every ``polling`` seconds (DBOS's default
is 1 s, which would cap this at about 2 workflows/s), so the benchmark passes its own.

    python -m bench.dbos_queues WORKFLOWS ROUNDS POLLING_SECONDS
"""

from __future__ import annotations

import sys
import time
from statistics import median

import psycopg
from dbos import DBOSClient, EnqueueOptions

from bench.common import fresh_database, processes, report, spawn, wait_for
from bench.dbos_app import NAME, QUEUE

OPTIONS: EnqueueOptions = {"queue_name": QUEUE, "workflow_name": "three"}


def settled(conn: psycopg.Connection) -> bool:
    """Whether no workflow is enqueued or running (one indexed probe)."""
    query = "SELECT 1 FROM dbos.workflow_status WHERE status IN ('ENQUEUED', 'PENDING') LIMIT 1"
    return conn.execute(query).fetchone() is None


def executors(conn: psycopg.Connection) -> int:
    """How many worker processes have run a workflow to success."""
    query = "SELECT count(DISTINCT executor_id) FROM dbos.workflow_status WHERE status = 'SUCCESS'"
    row = conn.execute(query).fetchone()
    return row[0] if row else 0


def queues(conn: psycopg.Connection) -> int:
    """How many queues are registered (0 before DBOS has made its schema)."""
    try:
        return len(conn.execute("SELECT 1 FROM dbos.queues").fetchall())
    except psycopg.errors.UndefinedTable:
        return 0


def workflows_seconds(client: DBOSClient, conn: psycopg.Connection, n: int) -> float:
    """Enqueue ``n`` 3-step workflows; the seconds from the first enqueue to the last success."""
    started = time.perf_counter()
    for _ in range(n):
        client.enqueue(OPTIONS)
    ended = wait_for(lambda: settled(conn), 600, "DBOS workflows")
    failed = conn.execute("SELECT status FROM dbos.workflow_status WHERE status <> 'SUCCESS'")
    if row := failed.fetchone():
        sys.exit(f"a DBOS workflow did not succeed: {row[0]}")
    return ended - started


def main(workflows: int, rounds: int, polling: float) -> None:
    url = fresh_database("agentflow_bench_dbos_queues")
    worker = [sys.executable, "-m", "bench.dbos_app", url]
    with (
        processes([spawn("dbos-w1", [*worker, "w1", str(polling)])]) as workers,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        # The first worker makes DBOS's schema and the queue; the second starts after it.
        wait_for(lambda: queues(conn) > 0, 120, "the first DBOS worker's queue")
        workers.append(spawn("dbos-w2", [*worker, "w2", str(polling)]))
        client = DBOSClient(system_database_url=url, application_name=NAME)
        try:
            deadline = time.perf_counter() + 120
            while executors(conn) < len(workers):  # until both workers are up and warm
                if time.perf_counter() > deadline:
                    sys.exit("a DBOS worker did not start: see its log in BENCH_LOG_DIR")
                workflows_seconds(client, conn, 10)
            seconds = [workflows_seconds(client, conn, workflows) for _ in range(rounds)]
        finally:
            client.destroy()
    report({"dbos_queue_per_s": workflows / median(seconds)})


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))

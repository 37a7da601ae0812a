"""What every benchmark process shares: its databases, its workers and how it reports."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
SERVER = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
# Not the test suite's Redis databases (9 and 5): benchmarks flush theirs.
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
LOG_DIR = Path(os.environ.get("BENCH_LOG_DIR", "/tmp"))


def fresh_database(name: str) -> str:
    """Drop and create database ``name``; return its URL."""
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{SERVER}/{name}"


def django_site(database: str, *, redis: bool = False) -> None:
    """Set up the demo site on a fresh, migrated database ``database``.

    ``redis``: Celery, the channel layer and rate limits on the benchmark's Redis database
    (flushed), as in production; else the embedded in-memory transports.
    """
    os.environ["BENCH_DATABASE_URL"] = fresh_database(database)
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    if redis:
        os.environ["REDIS_URL"] = REDIS_URL
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    if redis:
        import redis as redis_client

        redis_client.Redis.from_url(REDIS_URL).flushdb()


def spawn(name: str, command: list[str]) -> subprocess.Popen:
    """Start ``command`` in a session of its own (killed as a group), logging to LOG_DIR."""
    log = open(LOG_DIR / f"bench-{name}.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def daphne(name: str, application: str, port: int) -> subprocess.Popen:
    """daphne serving ``application`` on ``port`` (see ``spawn``), once it listens."""
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), application]
    process = spawn(name, command)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                sys.exit(f"daphne did not start:\n{(LOG_DIR / f'bench-{name}.log').read_text()}")
            time.sleep(0.1)


@contextlib.contextmanager
def processes(started: list[subprocess.Popen]) -> Iterator[list[subprocess.Popen]]:
    """Hold ``started`` for the block; then SIGTERM each process group and reap it."""
    try:
        yield started
    finally:
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in started:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def celery_workers(names: list[str], concurrency: int) -> list[subprocess.Popen]:
    """Start one prefork ``celery worker`` of the site per name, ``concurrency`` processes each."""
    options = "-P prefork -l WARNING --without-gossip --without-mingle --without-heartbeat"
    command = [sys.executable, "-m", "celery", "-A", "apps.project", "worker", *options.split()]
    return [spawn(name, [*command, "-c", str(concurrency), "-n", f"{name}@%h"]) for name in names]


def wait_for(done: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``done()`` every 5 ms until it is true; return the time it was."""
    deadline = time.perf_counter() + timeout
    while not done():
        if time.perf_counter() > deadline:
            sys.exit(f"{what}: not finished within {timeout:g}s")
        time.sleep(0.005)
    return time.perf_counter()


def runs_end(timeout: float, what: str) -> float:
    """Wait until no agentflow run in the database is active; the time that was so.

    Cheap to poll (one indexed probe, whatever the number of runs). Exits unless every
    run succeeded.
    """
    from agentflow.models import Run

    ended = wait_for(lambda: not Run.objects.filter(status__in=Run.ACTIVE).exists(), timeout, what)
    failed = Run.objects.exclude(status=Run.Status.SUCCEEDED).values_list("status", "error")[:1]
    if failed:
        sys.exit(f"{what}: a run did not succeed: {failed[0]}")
    return ended


def results_end(task_ids: list[str], timeout: float, what: str) -> float:
    """Wait until Celery's Redis result backend holds every one of these tasks' results.

    Polls the keys themselves: ``AsyncResult.get()`` on a chord re-reads every header
    result each interval, which would slow the raw baseline down by itself.
    """
    import redis
    from celery import current_app

    keys = [current_app.backend.get_key_for_task(task_id) for task_id in task_ids]
    client = redis.Redis.from_url(REDIS_URL)
    return wait_for(lambda: client.exists(*keys) == len(keys), timeout, what)


def per_step_ms(stamps: list[float], start: int, stop: int) -> float:
    """Mean milliseconds between consecutive stamps in [start, stop)."""
    window = stamps[start:stop]
    return (window[-1] - window[0]) / (len(window) - 1) * 1000


def mean_ms(seconds: list[float]) -> float:
    """The mean of ``seconds``, in milliseconds."""
    return statistics.fmean(seconds) * 1000


def report(results: dict[str, float]) -> None:
    """Hand results to the parent process as one JSON line."""
    sys.stdout.write("BENCH " + json.dumps(results) + "\n")

"""Fixtures that start real Celery worker processes against the test database and Redis."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis
from django.conf import settings

from tests.browser import asgi_server, browser_page, operator  # noqa: F401  (browser fixtures)
from tests.support import RecordingDispatcher, wait_until

ROOT = Path(__file__).resolve().parents[1]
# The PostgreSQL server's maintenance database, where the `database` fixture creates its own.
POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


class Worker:
    """A `celery worker` process group (its pool children and, with beat, the beat child)."""

    def __init__(self, name: str, process: subprocess.Popen, log_path: Path) -> None:
        self.name, self.process, self.log_path = name, process, log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group: no cleanup, no acks, like a machine dying."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """Warm shutdown, as a deploy does it: SIGTERM to the main process only.

        That is what ``celery multi stop``, ``docker stop`` and Kubernetes send. The main
        process stops taking messages, lets the running tasks finish, then stops its pool.
        (SIGTERM to every process of the group would kill the pool's running tasks.)
        """
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError):  # anything the shutdown left behind
            os.killpg(self.process.pid, signal.SIGKILL)


@pytest.fixture
def redis_client() -> redis.Redis:
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()  # a clean queue: no wake-ups left over from another test
    yield client
    client.flushdb()


@pytest.fixture
def workers(transactional_db, redis_client, tmp_path):
    """Start worker processes with ``workers(name, concurrency=2, beat=False, env=None)``.

    ``queues`` (comma-separated) makes the worker consume only those queues; ``pool`` is
    Celery's ``-P`` (prefork unless told).
    """
    started: list[Worker] = []

    def start(
        name: str = "w1",
        *,
        concurrency: int = 2,
        beat: bool = False,
        env: dict | None = None,
        queues: str | None = None,
        pool: str = "prefork",
    ) -> Worker:
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "apps.project",
            "worker",
            "-P",
            pool,
            "-c",
            str(concurrency),
            "-n",
            f"{name}@%h",
            "-l",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        if beat:
            command += ["-B", "-s", str(tmp_path / f"{name}-beat-schedule")]
        if queues:
            command += ["-Q", queues]
        environment = {
            **os.environ,
            # The settings this session runs on (tests.settings, or a variant of it).
            # (pytest-django puts --ds there; settings.SETTINGS_MODULE is None while a
            # test overrides settings.)
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "tests.settings"),
            "AGENTFLOW_TEST_WORKER": "1",
            "CELERY_SKIP_CHECKS": "1",
            **(env or {}),
        }
        log_path = tmp_path / f"{name}-{len(started)}.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(name, process, log_path)
        started.append(worker)
        wait_until(
            lambda: " ready." in worker.log() or not worker.alive(),
            timeout=60,
            what=f"worker {name} to start",
        )
        # A worker may die soon after it is ready (a test's fault point, on a message already
        # queued for it); one that never got ready did not start.
        assert " ready." in worker.log(), f"worker {name} exited:\n{worker.log()[-3000:]}"
        return worker

    yield start
    for worker in started:
        worker.kill()


@pytest.fixture
def recording_dispatcher(settings):
    """Make the engine record wake-ups instead of sending Celery messages."""
    settings.AGENTFLOW = {**settings.AGENTFLOW, "DISPATCHER": "tests.support.RecordingDispatcher"}
    RecordingDispatcher.sent = []
    RecordingDispatcher.children = []
    from agentflow._engine import ports

    ports._load.cache_clear()
    yield RecordingDispatcher.sent
    ports._load.cache_clear()


@dataclass
class PrivateRedis:
    """A Redis server that one test owns: it may flush it, or kill it, and nobody else notices."""

    url: str
    client: redis.Redis
    process: subprocess.Popen

    @property
    def env(self) -> dict[str, str]:
        """The worker environment that puts broker, results and limits on this server."""
        return {"REDIS_URL": self.url}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _point_celery_at(broker: str, backend: str) -> None:
    """Send this process's Celery messages to ``broker`` and read results from ``backend``."""
    from celery import current_app

    app = current_app._get_current_object()
    app.conf.broker_url = broker
    app.conf.result_backend = backend
    # Connection pools, producers and result backends are cached for the old URL.
    app._pool = None
    if "amqp" in app.__dict__:
        app.amqp._producer_pool = None
    app._backend_cache = None
    app._local = threading.local()


@pytest.fixture
def private_redis(tmp_path, settings):
    """Start ``redis-server`` on a free port for this test alone; stop it at teardown.

    Chaos tests that FLUSHALL or kill Redis use it, never the shared server. The test
    process sends its Celery messages there too; start workers with ``env=private_redis.env``.
    """
    port = _free_port()
    log = open(tmp_path / "redis.log", "w")  # noqa: SIM115 (closed at teardown)
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--daemonize", "no", "--dir", str(tmp_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            assert process.poll() is None, (tmp_path / "redis.log").read_text()
            return False

    wait_until(answers, timeout=10, what="the private redis-server to answer")
    before = settings.CELERY_BROKER_URL, settings.CELERY_RESULT_BACKEND
    settings.CELERY_BROKER_URL = settings.CELERY_RESULT_BACKEND = url
    settings.AGENTFLOW = {**settings.AGENTFLOW, "REDIS_URL": url}
    _point_celery_at(url, url)
    try:
        yield PrivateRedis(url, client, process)
    finally:
        _point_celery_at(*before)
        client.close()
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


@pytest.fixture
def database() -> Iterator[str]:
    """A new, empty PostgreSQL database for a site the test sets up itself (it migrates it).

    Named after the session's test database (AGENTFLOW_TEST_DB), so two suites side by side
    never share one; dropped at teardown, with whatever is still connected to it.
    """
    name = f"{settings.DATABASES['default']['TEST']['NAME']}_site_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

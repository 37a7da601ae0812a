"""Helpers shared by the tests: waiting on conditions, a dispatcher that records, and a
site's long-running processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], *, timeout: float, what: str, interval: float = 0.05
) -> T:
    """Return the first truthy value of ``predicate()``; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def all_at_once(fn: Callable[[], T], threads: int) -> list[T]:
    """Call ``fn`` from ``threads`` threads released together; return what each returned."""
    from django.db import connection

    results: list[T] = []
    barrier = threading.Barrier(threads)

    def call() -> None:
        try:
            barrier.wait()
            results.append(fn())
        finally:
            connection.close()  # each thread has its own connection

    workers = [threading.Thread(target=call) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results


class RecordingDispatcher:
    """Records wake-ups instead of sending them: for tests that drive the engine directly."""

    sent: list[tuple[UUID, datetime | None]] = []
    children: list[tuple[int, datetime | None]] = []

    def advance(self, run_id: UUID, *, eta: datetime | None = None) -> None:
        self.sent.append((run_id, eta))

    def run_child(
        self,
        step_id: int,
        *,
        eta: datetime | None = None,
        urgent: bool = False,
        queue: str | None = None,
    ) -> None:
        self.children.append((step_id, eta))

    def fan_out(
        self, run_id: UUID, position: int, step_ids: list[int], *, queue: str | None = None
    ) -> None:
        self.children.extend((step_id, None) for step_id in step_ids)


def assert_form_refuses(client: Any, url: str, data: dict, field: str, message: str = "") -> None:
    """POST an admin form; it must answer again with an error on ``field`` naming ``message``."""
    response = client.post(url, data)
    assert response.status_code == 200, f"the form was accepted ({response.status_code})"
    errors = response.context["adminform"].form.errors
    assert field in errors, errors
    assert message in " ".join(errors[field]), errors[field]


def run_ids(sent: list[tuple[UUID, Any]]) -> list[UUID]:
    return [run_id for run_id, _ in sent]


def never(user: Any, approval: Any) -> bool:
    """An approval rule that refuses everyone (a site's object-level rule)."""
    return False


class GroupListener:
    """A channel-layer channel subscribed to ``group``, as a websocket consumer would be.

    ``drain()`` appends to ``received`` what arrived, until 0.2 s pass with nothing more.
    """

    def __init__(self, group: str) -> None:
        from channels.layers import get_channel_layer

        self.layer = get_channel_layer()
        self.received: list[dict[str, Any]] = []
        self.channel = asyncio.run(self._subscribe(group))

    async def _subscribe(self, group: str) -> str:
        channel = await self.layer.new_channel()
        await self.layer.group_add(group, channel)
        return channel

    def drain(self) -> list[dict[str, Any]]:
        asyncio.run(self._drain())
        return self.received

    async def _drain(self) -> None:
        while True:
            try:
                message = await asyncio.wait_for(self.layer.receive(self.channel), timeout=0.2)
            except TimeoutError:
                return
            self.received.append(message)


@contextlib.contextmanager
def celery_conf(**values: object) -> Iterator[None]:
    """Set values on the current Celery app's configuration, then put the old ones back."""
    from celery import current_app

    conf = current_app.conf
    before = {name: conf.changes[name] for name in values if name in conf.changes}
    try:
        conf.update(values)
        yield
    finally:
        for name in values:
            del conf[name]  # the value read from Django's settings again
        conf.update(before)


class Process:
    """A long-running command of a site (web, worker, beat), its output in a log file.

    The log is ``<name>.log`` in ``log_dir`` (the working directory unless told).
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
        log_dir: Path | None = None,
    ) -> None:
        self.name, self.log_path = name, (log_dir or cwd) / f"{name}.log"
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float) -> None:
        wait_until(
            lambda: text in self.log() or self.process.poll() is not None,
            timeout=timeout,
            what=f"{self.name} to log {text!r}",
        )
        assert self.process.poll() is None, f"{self.name} exited:\n{self.log()[-4000:]}"

    def listening(self, port: int, timeout: float = 60) -> str:
        """Wait until this (web) process accepts connections on ``port``; return its URL."""

        def accepts() -> bool:
            assert self.process.poll() is None, f"{self.name} exited:\n{self.log()[-4000:]}"
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_until(accepts, timeout=timeout, what=f"{self.name} to listen on port {port}")
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        """Warm shutdown (SIGTERM to the main process), then SIGKILL whatever is left."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

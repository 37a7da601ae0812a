"""Websocket event latency: from a step's commit to a websocket client receiving it.

Runs advance in this process's threads on PostgreSQL, exactly as a worker advances them;
each step's event is published to the Redis channel layer after its commit, and daphne
(the site's asgi.py, in its own process) streams it to real websocket clients in another
process. A step stamps the monotonic clock (system-wide) just before its commit, so the
latency includes the commit itself.

- paced: 4 runs at once, 250 steps each, one step per 60 ms (1,000 events): each run is
  slower than the 20 frames/s pacing, so this measures the path, not the coalescing.
- burst: one run of 1,000 steps as fast as they commit: events share batch frames, and
  each waits up to one 50 ms frame interval by design.
"""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from bench.common import daphne, django_site, free_port, processes, report

ORIGIN = "http://127.0.0.1"


async def open_socket(
    port: int, path: str, session: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a websocket the way a browser does (session cookie, Origin).

    A minimal RFC 6455 client: autobahn (daphne's) is tied to Twisted once Django is set up.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {ORIGIN}\r\nCookie: sessionid={session}\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        sys.exit(f"websocket refused: {head.decode(errors='replace')}")
    return reader, writer


async def read_message(reader: asyncio.StreamReader) -> bytes | None:
    """The next text message from the server (unmasked frames); None once it closes."""
    message = b""
    while True:
        first, second = await reader.readexactly(2)
        size = second & 0x7F
        if size >= 126:
            size = int.from_bytes(await reader.readexactly(2 if size == 126 else 8), "big")
        payload = await reader.readexactly(size)
        opcode = first & 0x0F
        if opcode == 0x8:
            return None
        if opcode in (0x0, 0x1, 0x2):  # data and its continuations; pings are ignored
            message += payload
            if first & 0x80:
                return message


def listen(port: int, session: str, run_ids: list[str], pipe: Connection) -> None:
    """Watch runs from a process of its own, as a browser does; send back receive times.

    Sends "open" once every socket is accepted, then {run id: [monotonic time of each
    step.completed event]} once every run has sent run.succeeded.
    """

    async def watch(run_id: str) -> list[float]:
        reader, writer = await open_socket(port, f"/ws/agentflow/runs/{run_id}/", session)
        opened.append(run_id)
        if len(opened) == len(run_ids):
            pipe.send("open")
        received: list[float] = []
        try:
            while (payload := await read_message(reader)) is not None:
                now = time.monotonic()
                frame = json.loads(payload)
                for event in frame["data"]["events"] if frame["event"] == "batch" else [frame]:
                    if event["event"] == "step.completed":
                        received.append(now)
                    elif event["event"] == "run.succeeded":
                        return received
            return received
        finally:
            writer.close()

    async def main() -> list[list[float]]:
        return await asyncio.wait_for(asyncio.gather(*map(watch, run_ids)), 300)

    opened: list[str] = []
    pipe.send(dict(zip(run_ids, asyncio.run(main()), strict=True)))


def measure(port: int, session: str, runs: int, steps: int, gap: float) -> list[float]:
    """Latencies in milliseconds of ``runs`` x ``steps`` step events."""
    from django.db import connection

    from agentflow._engine import executor
    from agentflow.models import Run
    from bench.agents import commits

    rows = [
        Run.objects.create(agent="bench.paced", agent_version="1", input={"n": steps, "gap": gap})
        for _ in range(runs)
    ]
    ids = [str(run.id) for run in rows]
    spawn = multiprocessing.get_context("spawn")
    pipe, child_pipe = spawn.Pipe()
    client = spawn.Process(target=listen, args=(port, session, ids, child_pipe), daemon=True)
    client.start()
    if not pipe.poll(60):
        sys.exit("the websocket clients did not connect")
    pipe.recv()

    def advance(run: Run) -> str:
        try:
            return executor.advance(run.id, worker=f"bench-{run.id}")
        finally:
            connection.close()

    with ThreadPoolExecutor(runs) as pool:
        outcomes = list(pool.map(advance, rows))
    assert outcomes == ["succeeded"] * runs, outcomes
    if not pipe.poll(60):
        sys.exit("the websocket clients did not receive every run's end")
    received = pipe.recv()
    client.join(10)
    latencies = []
    for run in rows:
        sent, got = commits[str(run.id)], received[str(run.id)]
        assert len(sent) == len(got) == steps, (len(sent), len(got))
        latencies += [(g - s) * 1000 for s, g in zip(sent, got, strict=True)]
    return latencies


def percentiles(latencies: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return cuts[49], cuts[98]


def main(events: int) -> None:
    django_site("agentflow_bench_websocket", redis=True)  # channels-redis on it
    from django.contrib.auth.models import User
    from django.test import Client

    browser = Client()
    browser.force_login(User.objects.create_superuser("bench", "bench@example.com", "pw"))
    session = browser.cookies["sessionid"].value
    port = free_port()
    results: dict[str, Any] = {}
    with processes([daphne("daphne", "apps.project.asgi:application", port)]):
        runs = 4
        paced_p50, paced_p99 = percentiles(measure(port, session, runs, events // runs, 0.06))
        burst_p50, burst_p99 = percentiles(measure(port, session, 1, events, 0.0))
        results |= {
            "ws_paced_p50_ms": paced_p50,
            "ws_paced_p99_ms": paced_p99,
            "ws_burst_p50_ms": burst_p50,
            "ws_burst_p99_ms": burst_p99,
        }
    report(results)


if __name__ == "__main__":
    main(int(sys.argv[1]))

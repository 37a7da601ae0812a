"""Live events over websockets: the site's real ASGI app, PostgreSQL and the Redis layer.

Async bodies run under ``async_to_sync``: its ``sync_to_async`` calls (the consumers' ORM
work) come back to the test thread, which owns the test database connection.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.db import connection, transaction
from django.db.models import F
from django.test import Client

import agentflow
from agentflow._consumers import FRAME_INTERVAL
from agentflow._engine.state.outbox import append_event
from agentflow.models import Approval, Event, Policy, Run
from apps.project.asgi import application
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("transactional_db", "redis_client")

ORIGIN = "http://127.0.0.1:8000"


def make_user(name: str, *, staff: bool = False, view: bool = False) -> User:
    user = User.objects.create_user(name, password="pw", is_staff=staff)
    if view:
        user.user_permissions.add(Permission.objects.get(codename="view_run"))
    return user


def session_of(user: User) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def socket(path: str, session: str | None = None, origin: str = ORIGIN) -> WebsocketCommunicator:
    headers = [(b"origin", origin.encode()), (b"host", b"127.0.0.1:8000")]
    if session is not None:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={session}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)


def new_run(events: int = 0) -> Run:
    run = Run.objects.create(agent="tests.asker", agent_version="1", input={})
    for i in range(events):
        append_event(run.id, "test.tick", {"i": i})
    return run


def unwrap(frame: dict[str, Any]) -> list[dict[str, Any]]:
    """The events a frame carries; a batch's ``seq`` must be its last event's."""
    if frame["event"] != "batch":
        return [frame]
    events = frame["data"]["events"]
    assert frame.get("seq", events[-1].get("seq")) == events[-1].get("seq"), frame
    return events


async def receive_until(
    communicator: WebsocketCommunicator, done: Callable[[list[dict]], bool], timeout: float
) -> tuple[list[dict], list[float]]:
    """Events received (batches unwrapped) until ``done(events)``, and each frame's time."""
    events: list[dict] = []
    stamps: list[float] = []
    deadline = time.monotonic() + timeout
    while not done(events):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; got {len(events)} events, last {events[-1:]}"
        events += unwrap(await communicator.receive_json_from(timeout=left))
        stamps.append(time.monotonic())
    return events, stamps


def up_to(seq: int) -> Callable[[list[dict]], bool]:
    return lambda events: bool(events) and events[-1]["seq"] >= seq


class Writer(threading.Thread):
    """Appends ``count`` events to a run, each in its own transaction, as fast as it can."""

    def __init__(self, run: Run, count: int) -> None:
        super().__init__(daemon=True)
        self.run_id, self.count, self.written, self.error = run.id, count, 0, None

    def run(self) -> None:
        try:
            for i in range(self.count):
                append_event(self.run_id, "test.burst", {"i": i})
                self.written += 1
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            connection.close()


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def test_refused_sockets_receive_no_frame(settings):
    run = new_run(events=3)
    admin = session_of(make_user("admin", staff=True, view=True))
    sessions = {
        "anonymous": None,
        "no permission": session_of(make_user("plain", staff=True)),
        "permission, refused by the default rule (not staff)": session_of(
            make_user("viewer", view=True)
        ),
    }

    async def refused(communicator: WebsocketCommunicator, why: str) -> None:
        connected, _ = await communicator.connect()
        assert not connected, why
        assert await communicator.receive_nothing(timeout=0.2), why

    async def check() -> None:
        for why, session in sessions.items():
            await refused(socket(f"ws/agentflow/runs/{run.id}/", session), why)
        # The list needs the global permission; the rule then filters each run's frames.
        for why in ("anonymous", "no permission"):
            await refused(socket("ws/agentflow/runs/", sessions[why]), f"list: {why}")
        foreign = "https://evil.example"
        await refused(socket(f"ws/agentflow/runs/{run.id}/", admin, foreign), "foreign Origin")
        await refused(socket("ws/agentflow/runs/", admin, foreign), "list: foreign Origin")
        await refused(socket("ws/agentflow/runs/not-a-uuid/", admin), "malformed run id")
        # No route for these once decoded: refused at the handshake, not failed with a 500.
        await refused(socket("ws/agentflow/runs/..%2f..%2fetc/", admin), "a path, not an id")
        await refused(socket(f"ws/agentflow/runs/{run.id}/more/", admin), "a longer path")
        await refused(socket("ws/agentflow/nothing-here/", admin), "another path of ours")
        await refused(socket(f"ws/agentflow/runs/{run.id.hex[::-1]}/", admin), "unknown run")
        await refused(socket(f"ws/agentflow/runs/{run.id}/?after=-1", admin), "bad after")
        await refused(socket(f"ws/agentflow/runs/{run.id}/?after=x", admin), "bad after")

        # The same request with a permitted session is accepted and gets the backlog.
        allowed = socket(f"ws/agentflow/runs/{run.id}/", admin)
        assert (await allowed.connect())[0]
        events, _ = await receive_until(allowed, up_to(3), timeout=10)
        assert [event["seq"] for event in events] == [1, 2, 3]
        await allowed.disconnect()

    async_to_sync(check)()

    settings.AGENTFLOW = {**settings.AGENTFLOW, "RUN_VIEW_RULE": "tests.support.never"}

    async def rule_refuses() -> None:
        await refused(socket(f"ws/agentflow/runs/{run.id}/", admin), "the site's rule")

    async_to_sync(rule_refuses)()


def test_a_reconnect_after_seq_gets_exactly_the_missed_events():
    run = new_run(events=3)
    admin = session_of(make_user("admin", staff=True, view=True))
    path = f"ws/agentflow/runs/{run.id}/"

    async def first() -> list[dict]:
        communicator = socket(path, admin)
        assert (await communicator.connect())[0]
        events, _ = await receive_until(communicator, up_to(3), timeout=10)
        await communicator.disconnect()
        return events

    seen = async_to_sync(first)()
    assert [(event["seq"], event["data"]) for event in seen] == [
        (1, {"i": 0}),
        (2, {"i": 1}),
        (3, {"i": 2}),
    ]

    for i in range(3, 7):  # written while the client is away
        append_event(run.id, "test.tick", {"i": i})

    async def again() -> list[dict]:
        communicator = socket(f"{path}?after={seen[-1]['seq']}", admin)
        assert (await communicator.connect())[0]
        # What a client sends is ignored, even when it is not JSON.
        await communicator.send_to(text_data="not json")
        await communicator.send_to(bytes_data=b"\x00")
        events, _ = await receive_until(communicator, up_to(7), timeout=10)
        assert await communicator.receive_nothing(timeout=0.3)
        await communicator.disconnect()
        return events

    missed = async_to_sync(again)()
    assert [(event["seq"], event["event"], event["data"]) for event in missed] == [
        (seq, "test.tick", {"i": seq - 1}) for seq in range(4, 8)
    ]


def lost_publish(run: Run, type_: str, data: dict) -> int:
    """Commit an event as a process that died before publishing it would; return its seq."""
    with transaction.atomic():
        Run.objects.filter(id=run.id).update(event_seq=F("event_seq") + 1)
        seq = Run.objects.values_list("event_seq", flat=True).get(id=run.id)
        Event.objects.create(run=run, seq=seq, type=type_, data=data)
    return seq


def test_an_event_whose_publish_was_lost_is_read_from_the_table():
    run = new_run(events=1)
    admin = session_of(make_user("admin", staff=True, view=True))

    async def check() -> list[dict]:
        communicator = socket(f"ws/agentflow/runs/{run.id}/", admin)
        assert (await communicator.connect())[0]
        events, _ = await receive_until(communicator, up_to(1), timeout=10)
        assert await sync_to_async(lost_publish)(run, "test.lost", {"i": 1}) == 2
        await sync_to_async(append_event)(run.id, "test.tick", {"i": 2})
        events += (await receive_until(communicator, up_to(3), timeout=10))[0]
        await communicator.disconnect()
        return events

    events = async_to_sync(check)()
    assert [(event["seq"], event["event"]) for event in events] == [
        (1, "test.tick"),
        (2, "test.lost"),
        (3, "test.tick"),
    ]


def test_a_thousand_events_written_during_connects_arrive_once_in_order():
    run = new_run()
    admin = session_of(make_user("admin", staff=True, view=True))
    path = f"ws/agentflow/runs/{run.id}/"
    total = 1000
    writer = Writer(run, total)

    async def check() -> dict[str, list[int]]:
        writer.start()
        await until(lambda: writer.written >= 50 or writer.error, 30, "the first events")
        early = socket(path, admin)
        assert (await early.connect())[0]
        await until(lambda: writer.written >= 300 or writer.error, 60, "300 events")
        late = socket(path, admin)
        assert (await late.connect())[0]
        # The early client drops and reconnects with the last seq it saw, mid-stream.
        head, _ = await receive_until(early, lambda events: len(events) >= 100, timeout=30)
        await early.disconnect()
        resumed = socket(f"{path}?after={head[-1]['seq']}", admin)
        assert (await resumed.connect())[0]
        tail, _ = await receive_until(resumed, up_to(total), timeout=60)
        rest, _ = await receive_until(late, up_to(total), timeout=60)
        for communicator in (resumed, late):
            assert await communicator.receive_nothing(timeout=0.2)
            await communicator.disconnect()
        return {
            "reconnected": [event["seq"] for event in head + tail],
            "late": [event["seq"] for event in rest],
        }

    seqs = async_to_sync(check)()
    writer.join(30)
    assert writer.error is None, writer.error
    assert seqs["reconnected"] == list(range(1, total + 1))
    assert seqs["late"] == list(range(1, total + 1))


def test_a_burst_is_coalesced_to_about_twenty_frames_a_second():
    run = new_run()
    admin = session_of(make_user("admin", staff=True, view=True))
    total = 800
    writer = Writer(run, total)

    async def check() -> tuple[list[dict], list[float]]:
        communicator = socket(f"ws/agentflow/runs/{run.id}/", admin)
        assert (await communicator.connect())[0]
        writer.start()
        received = await receive_until(communicator, up_to(total), timeout=60)
        await communicator.disconnect()
        return received

    events, stamps = async_to_sync(check)()
    writer.join(30)
    assert writer.error is None, writer.error
    assert [event["seq"] for event in events] == list(range(1, total + 1))
    assert [event["data"]["i"] for event in events] == list(range(total))
    # Frames leave at least FRAME_INTERVAL apart: about 20 in any second (one of slack for
    # a frame that the test's loop picked up late), and far fewer frames than events.
    per_second = round(1 / FRAME_INTERVAL)
    busiest = max(sum(1 for t in stamps if start <= t < start + 1) for start in stamps)
    assert busiest <= per_second + 1, f"{busiest} frames in one second"
    assert len(stamps) < total / 4, f"{len(stamps)} frames for {total} events"


def test_the_list_socket_streams_status_changes_and_pending_approvals(workers):
    workers("w1")
    admin_user = User.objects.create_superuser("admin", "admin@example.com", "pw")
    admin = session_of(admin_user)
    # Allowed on the list (global permission) but not by the default rule: sees no run.
    viewer = session_of(make_user("viewer", view=True))

    async def check() -> tuple[Run, list[dict], Approval]:
        staff_list, viewer_list = (
            socket("ws/agentflow/runs/", admin),
            socket("ws/agentflow/runs/", viewer),
        )
        assert (await staff_list.connect())[0]
        assert (await viewer_list.connect())[0]
        run = await sync_to_async(agentflow.start)("tests.asker")

        def has(event: str, **data: Any) -> Callable[[list[dict]], bool]:
            return lambda frames: any(
                frame["event"] == event
                and all(frame["data"].get(k) == v for k, v in {"run": str(run.id), **data}.items())
                for frame in frames
            )

        frames, _ = await receive_until(staff_list, has("approval.requested"), timeout=60)
        approval = await sync_to_async(Approval.objects.get)(run=run)
        await sync_to_async(agentflow.approve)(approval, by=admin_user)
        more, _ = await receive_until(staff_list, has("run.status", status="succeeded"), timeout=60)

        # A fan-out child that a policy sends to a person asks with its parent's step.started.
        await sync_to_async(Policy.objects.create)(
            name="big", tool="tests.transfer", effect="approve", condition="amount > 1000"
        )
        fan = await sync_to_async(agentflow.start)(
            "tests.transferrer", {"amounts": ["50", "1500.00"]}
        )
        child = await sync_to_async(wait_until)(
            lambda: Approval.objects.filter(run=fan).values("id", "title").first(),
            timeout=60,
            what="the child's approval",
        )
        wanted = {"run": str(fan.id), "approval": child["id"], "title": child["title"], "index": 1}
        await receive_until(
            staff_list,
            lambda frames: any(frame["data"] == wanted for frame in frames),
            timeout=60,
        )
        assert await viewer_list.receive_nothing(timeout=0.3)
        for communicator in (staff_list, viewer_list):
            await communicator.disconnect()
        return run, frames + more, approval

    run, frames, approval = async_to_sync(check)()
    ours = [frame for frame in frames if frame["data"]["run"] == str(run.id)]
    requested = [frame for frame in ours if frame["event"] == "approval.requested"]
    assert requested[0]["data"] == {
        "run": str(run.id),
        "approval": approval.id,
        "title": "Raise the limit?",
        "index": None,
    }
    changes = [frame["data"] for frame in ours if frame["event"] == "run.status"]
    statuses = [change["status"] for change in changes]
    # The web process and the worker publish independently; an older status never follows.
    seqs = [change["seq"] for change in changes]
    assert seqs == sorted(set(seqs)), changes
    assert "waiting" in statuses and statuses[-1] == "succeeded", statuses
    assert {frame["data"]["agent"] for frame in ours if frame["event"] == "run.status"} == {
        "tests.asker"
    }
    decided = [frame for frame in ours if frame["event"] == "approval.decided"]
    assert decided[0]["data"] == {
        "run": str(run.id),
        "approval": approval.id,
        "status": "approved",
    }

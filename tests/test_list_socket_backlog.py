"""The list socket's backlog: ``ws/agentflow/runs/?after=<seq>`` replays what a page missed.

A list page renders the cursor (the newest event key) into its live data; whatever is
committed between that rendering and the socket's connect is replayed on connect, even an
event whose key was taken before the cursor and committed after it. The site's real ASGI
app, PostgreSQL and the Redis layer; no worker is needed (events are written directly).
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse

from agentflow._consumers import LATE_COMMIT_SECONDS
from agentflow._engine.state.outbox import append_event
from agentflow.models import Approval, Run
from tests.test_websockets import make_user, receive_until, session_of, socket, unwrap

pytestmark = pytest.mark.usefixtures("transactional_db", "redis_client")


def rendered_cursor(user: User) -> int:
    """The ``after`` a list page (the approvals queue) hands to its socket."""
    client = Client()
    client.force_login(user)
    page = client.get(reverse("admin:agentflow_approval_queue")).content.decode()
    live = json.loads(
        re.search(r'<script id="af-live" type="application/json">(.*?)</script>', page)[1]
    )
    assert live["socket"] == "/ws/agentflow/runs/"
    return live["after"]


def waiting_run() -> Run:
    return Run.objects.create(agent="tests.asker", agent_version="1", input={}, status="waiting")


def about(run: Run) -> Any:
    return lambda frames: any(frame["data"].get("run") == str(run.id) for frame in frames)


def test_what_was_committed_between_render_and_connect_is_replayed():
    admin_user = User.objects.create_superuser("admin", "admin@example.com", "pw")
    admin = session_of(admin_user)
    viewer = session_of(make_user("viewer", view=True))  # the default rule shows it no run
    after = rendered_cursor(admin_user)

    # Between the page's rendering and its socket's connect: a run asks a person.
    run = waiting_run()
    approval = Approval.objects.create(run=run, position=0, title="Pay?", request={})
    append_event(run.id, "approval.requested", {"position": 0})
    append_event(run.id, "run.waiting", {"reason": "approval"})

    async def check() -> list[dict]:
        late = socket(f"ws/agentflow/runs/?after={after}", admin)
        assert (await late.connect())[0]
        frames, _ = await receive_until(
            late,
            lambda got: {f["event"] for f in got} >= {"approval.requested", "run.status"},
            timeout=10,
        )
        # Resuming after the last key seen replays nothing new (only what it already had).
        last = max(frame["seq"] for frame in frames)
        again = socket(f"ws/agentflow/runs/?after={last}", admin)
        assert (await again.connect())[0]
        repeated: list[dict] = []
        while not await again.receive_nothing(timeout=0.5):
            repeated += unwrap(await again.receive_json_from())
        key = lambda frame: (frame["seq"], frame["event"], json.dumps(frame["data"]))  # noqa: E731
        assert {key(f) for f in repeated} <= {key(f) for f in frames}, repeated
        # Without after, a socket streams from now on; the rule still filters the backlog.
        for path, session in (
            ("ws/agentflow/runs/", admin),
            (f"ws/agentflow/runs/?after={after}", viewer),
        ):
            quiet = socket(path, session)
            assert (await quiet.connect())[0]
            assert await quiet.receive_nothing(timeout=0.5), path
            await quiet.disconnect()
        for communicator in (late, again):
            await communicator.disconnect()
        return frames

    frames = async_to_sync(check)()
    requested = [f for f in frames if f["event"] == "approval.requested"]
    assert requested[0]["data"] == {
        "run": str(run.id),
        "approval": approval.id,
        "title": "Pay?",
        "index": None,
    }
    assert requested[0]["seq"] > after
    statuses = [f for f in frames if f["event"] == "run.status"]
    assert statuses[-1]["data"]["status"] == "waiting" and statuses[-1]["seq"] > after


def test_an_event_keyed_before_the_cursor_and_committed_after_it_is_replayed():
    admin_user = User.objects.create_superuser("admin", "admin@example.com", "pw")
    admin = session_of(admin_user)
    slow, fast = waiting_run(), waiting_run()
    keyed, release = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def slow_transaction() -> None:
        try:
            with transaction.atomic():
                append_event(slow.id, "run.waiting", {})  # takes its key now ...
                keyed.set()
                assert release.wait(30)
            # ... and commits only here, after the page was rendered.
        except BaseException as exc:
            failures.append(exc)
        finally:
            connection.close()

    writer = threading.Thread(target=slow_transaction)
    writer.start()
    assert keyed.wait(30)
    append_event(fast.id, "run.waiting", {})  # a larger key, committed first
    after = rendered_cursor(admin_user)
    release.set()
    writer.join(30)
    assert not failures, failures

    async def check() -> list[dict]:
        late = socket(f"ws/agentflow/runs/?after={after}", admin)
        assert (await late.connect())[0]
        frames, _ = await receive_until(late, about(slow), timeout=10)
        await late.disconnect()
        return frames

    frames = async_to_sync(check)()
    replayed = [f for f in frames if f["data"]["run"] == str(slow.id)]
    assert replayed[0]["event"] == "run.status" and replayed[0]["seq"] < after
    assert LATE_COMMIT_SECONDS >= 5  # the window covers a transaction far longer than this


def test_a_malformed_after_is_refused_on_the_list_socket():
    admin = session_of(User.objects.create_superuser("admin", "admin@example.com", "pw"))

    async def check() -> None:
        for after in ("x", "-1", "1.5", str(2**63)):
            refused = socket(f"ws/agentflow/runs/?after={after}", admin)
            assert not (await refused.connect())[0], after
            assert await refused.receive_nothing(timeout=0.2), after

    async_to_sync(check)()

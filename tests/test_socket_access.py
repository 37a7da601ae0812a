"""Access ends while a socket is open: the run and list sockets close within seconds.

A red-team probe kept receiving 28 to 44 events on open sockets after the user's
permission was removed, after logout, and after the account was deactivated. Each case
opens both sockets with a real session, ends access the way a site does, and waits for
the close (code 4403); a socket whose user keeps access stays open and streams.
"""

from __future__ import annotations

import time

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth.models import Permission
from django.contrib.sessions.models import Session

from agentflow import _socket_access as socket_access
from agentflow._consumers import ACCESS_ENDED
from agentflow._engine.state.outbox import append_event
from tests.test_websockets import make_user, new_run, receive_until, session_of, socket, up_to

pytestmark = pytest.mark.usefixtures("transactional_db", "redis_client")


def remove_permission(user) -> None:
    user.user_permissions.remove(Permission.objects.get(codename="view_run"))


def deactivate(user) -> None:
    user.is_active = False
    user.save()


def log_out(user) -> None:
    Session.objects.all().delete()  # what logout() does to the stored session


def change_password(user) -> None:
    user.set_password("a new one")
    user.save()


def demote(user) -> None:
    user.is_staff = False  # the default RUN_VIEW_RULE admits staff only
    user.save()


async def closed_with(communicator, seconds: float) -> int:
    """The close code the socket gets within ``seconds``, frames before it skipped."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "the socket stayed open"
        output = await communicator.receive_output(timeout=left)
        if output["type"] == "websocket.close":
            return output.get("code")


@pytest.mark.parametrize(
    "end_access", [remove_permission, deactivate, log_out, change_password, demote]
)
def test_a_socket_closes_within_seconds_when_its_user_loses_access(monkeypatch, end_access):
    monkeypatch.setattr(socket_access, "RECHECK_SECONDS", 0.2)
    viewer = make_user("viewer", staff=True, view=True)
    keeper = make_user("keeper", staff=True, view=True)
    viewer_session, keeper_session = session_of(viewer), session_of(keeper)
    run = new_run(events=1)

    async def scenario() -> None:
        sockets = {
            "run": socket(f"ws/agentflow/runs/{run.id}/", viewer_session),
            "list": socket("ws/agentflow/runs/", viewer_session),
            "kept": socket(f"ws/agentflow/runs/{run.id}/", keeper_session),
        }
        for name, communicator in sockets.items():
            connected, _ = await communicator.connect()
            assert connected, name
        await receive_until(sockets["run"], up_to(1), timeout=10)
        await receive_until(sockets["kept"], up_to(1), timeout=10)
        # The list socket shows the run (and remembers that it may).
        await sync_to_async(append_event)(run.id, "run.waiting", {})
        listed = await sockets["list"].receive_json_from(timeout=10)
        assert listed["event"] == "run.status" and listed["data"]["status"] == "waiting"
        if end_access is log_out:
            await sync_to_async(Session.objects.filter(session_key=viewer_session).delete)()
        else:
            await sync_to_async(end_access)(viewer)
        assert await closed_with(sockets["run"], 20) == ACCESS_ENDED
        if end_access is not demote:
            assert await closed_with(sockets["list"], 20) == ACCESS_ENDED
        # The other user's socket saw the same checks and streams on.
        await sync_to_async(append_event)(run.id, "run.started", {})
        events, _ = await receive_until(sockets["kept"], up_to(3), timeout=10)
        assert events[-1]["event"] == "run.started"
        if end_access is demote:
            # Still allowed to list runs, but no longer to see this one: its status is
            # not sent (the rule is asked again after each access check).
            assert await sockets["list"].receive_nothing(timeout=1)
        for communicator in sockets.values():
            await communicator.disconnect()

    async_to_sync(scenario)()

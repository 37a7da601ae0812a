"""Leaks and smaller defects (issue 8, part 4): each test fails without its fix."""

from __future__ import annotations

import json
from datetime import timedelta
from itertools import pairwise

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.utils import timezone

import agentflow
from agentflow._engine import child_runner, decisions, executor
from agentflow.models import Approval, Event, Run, Step
from tests.support import RecordingDispatcher
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "sk-live-4f9a8b7c6d5e4f3a2b1c"
MISSING = "00000000-0000-0000-0000-000000000000"


def tables_holding(text: str) -> list[str]:
    """The agentflow tables with ``text`` anywhere in a row, read with raw SQL."""
    found = []
    for model in apps.get_app_config("agentflow").get_models():
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT * FROM {model._meta.db_table}")
            if text in json.dumps(cursor.fetchall(), default=str):
                found.append(model._meta.db_table)
    return found


def admin_pages(run: Run) -> list[str]:
    """Every admin page that shows the run, its steps, events or decisions."""
    pages = ["/admin/agentflow/run/", f"/admin/agentflow/run/{run.id}/change/"]
    for model in (Step, Event, Approval):
        prefix = f"/admin/agentflow/{model._meta.model_name}/"
        pages.append(prefix)
        pages += [
            f"{prefix}{pk}/change/"
            for pk in model.objects.filter(run=run).values_list("pk", flat=True)
        ]
    return pages


def pages_showing(client: Client, pages: list[str], text: str) -> list[str]:
    shown = []
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        if text in response.content.decode():
            shown.append(page)
    return shown


def test_a_secret_in_an_approval_title_or_event_type_is_stored_and_shown_nowhere(workers):
    workers("w1")
    root = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(root)
    run = agentflow.wait(agentflow.start("tests.secret_titles", {"token": SECRET}), timeout=60)
    assert run.status == Run.Status.WAITING, run.error
    approval = Approval.objects.get(run=run)
    assert approval.title == "Approve [redacted]?"
    assert Step.objects.get(run=run, position=0).name == "note-[redacted]"
    assert Event.objects.filter(run=run, type="note-[redacted]").exists()
    assert "[redacted]" in run.wait_reason
    assert tables_holding(SECRET) == []
    assert pages_showing(client, admin_pages(run), SECRET) == []

    # Replay compares the code's names with the redacted ones it stored: the run goes on.
    agentflow.approve(approval, by=root)
    run = agentflow.wait(run, timeout=60)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output == {"approved": True}
    assert Step.objects.get(run=run, position=2).name == "done-[redacted]"
    assert agentflow.replay(run).ok
    assert tables_holding(SECRET) == []
    assert pages_showing(client, admin_pages(run), SECRET) == []


def test_recover_sends_each_dead_child_once_and_caps_each_list(recording_dispatcher, monkeypatch):
    run = agentflow.start("tests.fan", {"n": 4})
    assert executor.advance(run.id, worker="t") == "waiting"
    kids = Step.objects.filter(run=run, index__isnull=False).order_by("index")
    ids = list(kids.values_list("id", flat=True))
    long_ago = timezone.now() - timedelta(minutes=10)
    # Three claims whose worker died long ago, and one child whose wake-up was lost.
    kids.filter(id__in=ids[:3]).update(
        status=Step.Status.RUNNING, attempts=1, heartbeat_at=long_ago, dispatched_at=long_ago
    )
    kids.filter(id=ids[3]).update(dispatched_at=long_ago)
    monkeypatch.setattr(child_runner, "BATCH", 2)
    RecordingDispatcher.children.clear()

    now = timezone.now()
    assert child_runner.recover(now) == {"children_dead": 2, "children_resent": 1}
    first = [step_id for step_id, _ in RecordingDispatcher.children]
    assert sorted(first) == sorted(set(first)) and len(first) == 3
    assert kids.filter(status=Step.Status.RUNNING).count() == 1  # left for the next pass

    RecordingDispatcher.children.clear()
    assert child_runner.recover(now) == {"children_dead": 1, "children_resent": 0}
    second = [step_id for step_id, _ in RecordingDispatcher.children]
    assert len(second) == 1 and set(first) | set(second) == set(ids)

    RecordingDispatcher.children.clear()
    assert child_runner.recover(now) == {"children_dead": 0, "children_resent": 0}
    assert RecordingDispatcher.children == []


def test_a_child_whose_tool_changed_mid_fan_out_fails_once_with_tool_argument_error(workers):
    # This process (code version "a") records the fan-out; its calls fit tests.reshaped(count).
    run = agentflow.start("tests.reshaped_fan", {"n": 3})
    assert executor.advance(run.id, worker="old-deploy") == "waiting"
    assert Step.objects.filter(run=run, index__isnull=False).count() == 3
    # The children run on a worker deployed with tests.reshaped(amount).
    workers("w-new", env={"AGENTFLOW_TEST_VARIANT": "b"})
    run = agentflow.wait(run, timeout=60)

    assert run.status == Run.Status.SUCCEEDED, run.error
    assert not Execution.objects.filter(key="reshaped").exists()  # the tool never ran
    for child in Step.objects.filter(run=run, index__isnull=False).order_by("index"):
        assert child.status == Step.Status.FAILED
        assert child.attempts == 1  # no retries, no "worker died" loop
        assert child.error["type"] == "agentflow.exceptions.ToolArgumentError"
        message = child.error["message"]
        assert f"Tool 'tests.reshaped' got invalid arguments at run {run.id}" in message
        assert f"child {child.index}" in message and "amount" in message
    assert all(
        slot.startswith("ToolArgumentError: Tool 'tests.reshaped' got invalid arguments")
        for slot in run.output
    ), run.output


def test_a_child_starts_when_a_worker_claims_it(workers):
    workers("w1", concurrency=1)  # one process: the children run one after another
    run = agentflow.wait(agentflow.start("tests.fan", {"n": 3, "pause": 0.2}), timeout=60)
    assert run.status == Run.Status.SUCCEEDED, run.error
    parent = Step.objects.get(run=run, position=0, index__isnull=True)
    kids = list(Step.objects.filter(run=run, position=0, index__isnull=False))
    kids.sort(key=lambda kid: kid.started_at)
    assert parent.started_at < kids[0].started_at
    for earlier, later in pairwise(kids):
        assert earlier.finished_at <= later.started_at, (earlier.started_at, later.started_at)


def test_a_missing_run_or_approval_raises_its_not_found_error(recording_dispatcher):
    def missing_run(call) -> None:
        with pytest.raises(agentflow.RunNotFound, match=f"There is no run {MISSING}"):
            call(MISSING)

    missing_run(agentflow.get_run)
    missing_run(agentflow.cancel)
    missing_run(agentflow.resume)
    missing_run(agentflow.replay)
    missing_run(lambda run: agentflow.signal(run, "go"))
    missing_run(lambda run: agentflow.wait(run, timeout=0))
    with pytest.raises(agentflow.RunNotFound, match="'not-a-uuid' is not a run id"):
        agentflow.get_run("not-a-uuid")

    root = User.objects.create_superuser("root", "root@example.com", "pw")
    for decide in (agentflow.approve, agentflow.reject):
        with pytest.raises(agentflow.ApprovalNotFound, match="There is no approval 999999"):
            decide(999999, by=root)
    with pytest.raises(agentflow.ApprovalNotFound, match="There is no approval 999999"):
        decisions.decide(999999, outcome=Approval.Status.REJECTED)

    # Code that caught the old errors keeps working.
    with pytest.raises(agentflow.InvalidState):
        agentflow.resume(MISSING)
    with pytest.raises(agentflow.InvalidInput):
        agentflow.cancel(MISSING)
    assert issubclass(agentflow.ApprovalNotFound, agentflow.InvalidInput)


def test_a_secret_in_a_signal_name_or_a_cancelling_username_is_stored_nowhere(
    recording_dispatcher,
):
    name = f"reply-{SECRET}"
    run = agentflow.start("tests.named_waiter", {"name": name})
    assert executor.advance(run.id, worker="test") == "waiting"
    agentflow.signal(run, name, {"ok": True})
    assert executor.advance(run.id, worker="test") == "succeeded"
    assert Run.objects.get(id=run.id).output == {"got": {"ok": True}}

    email = "alice.operator@example.com"  # the default patterns redact emails
    asker = agentflow.start("tests.asker", {})
    assert executor.advance(asker.id, worker="test") == "waiting"
    agentflow.cancel(asker, by=User.objects.create_user(username=email))
    assert Step.objects.get(run=asker, status=Step.Status.FAILED).error["type"] == "cancelled"
    assert Approval.objects.get(run=asker).status == Approval.Status.EXPIRED

    assert tables_holding(SECRET) == []
    assert tables_holding(email) == []

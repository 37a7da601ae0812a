"""Fan-out at the engine's ports (children run in this process): sizes and refusals."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

import agentflow
from agentflow._engine import child_runner, executor, fan_out_record
from agentflow.models import Run, Step
from tests.support import RecordingDispatcher, wait_until
from tests.testapp import agents as test_agents

pytestmark = pytest.mark.django_db(transaction=True)


def waiting_on_a_row_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


def run_all_children(dispatched: list) -> None:
    while dispatched:
        step_id, _ = dispatched.pop(0)
        child_runner.run_child(step_id)


def test_a_map_larger_than_the_payload_limit_fits_when_each_call_does(
    recording_dispatcher, settings
):
    from tests.support import RecordingDispatcher

    settings.AGENTFLOW = {**settings.AGENTFLOW, "MAX_PAYLOAD_BYTES": 2_000}
    run = agentflow.start("tests.fan", {"n": 300})  # ~9 kB of arguments in all
    assert executor.advance(run.id, worker="t") == "waiting"
    parent = Step.objects.get(run=run, position=0, index__isnull=True)
    assert parent.args == {"calls": 300, "tools": ["tests.child_effect"]}
    run_all_children(RecordingDispatcher.children)
    assert executor.advance(run.id, worker="t") == "succeeded"
    run.refresh_from_db()
    assert run.output["doubled"] == [i * 2 for i in range(300)]
    assert agentflow.replay(run).ok


def test_an_oversized_call_is_refused_naming_its_index(recording_dispatcher, settings, monkeypatch):
    settings.AGENTFLOW = {**settings.AGENTFLOW, "MAX_PAYLOAD_BYTES": 200}

    def oversized(ctx, n):
        try:
            ctx.map(test_agents.child_effect, [{"i": 1}, {"i": 2, "pause": 0.0}, {"i": "x" * 500}])
        except agentflow.ToolArgumentError as exc:
            return {"index": "call 2" in str(exc), "limit": "MAX_PAYLOAD_BYTES" in str(exc)}

    monkeypatch.setattr(test_agents.fan, "fn", oversized)
    run = agentflow.start("tests.fan", {"n": 3})
    assert executor.advance(run.id, worker="t") == "succeeded"
    run.refresh_from_db()
    assert run.output == {"index": True, "limit": True}
    assert not Step.objects.filter(run=run).exists()  # nothing half-recorded


def test_an_empty_map_returns_an_empty_list(recording_dispatcher, monkeypatch):
    monkeypatch.setattr(test_agents.fan, "fn", lambda ctx, n: ctx.map(test_agents.child_effect, []))
    run = agentflow.start("tests.fan", {"n": 0})
    assert executor.advance(run.id, worker="t") == "succeeded"
    assert Run.objects.get(id=run.id).output == []


def test_a_failure_is_recorded_even_when_its_traceback_is_over_the_payload_limit(
    recording_dispatcher, settings, monkeypatch
):
    settings.AGENTFLOW = {**settings.AGENTFLOW, "MAX_PAYLOAD_BYTES": 100}

    def fails(ctx, n):
        raise ValueError("x" * 10_000)

    monkeypatch.setattr(test_agents.fan, "fn", fails)
    run = agentflow.start("tests.fan", {"n": 1})
    assert executor.advance(run.id, worker="t") == "failed"
    run.refresh_from_db()
    assert run.status == Run.Status.FAILED
    assert run.error["type"] == "builtins.ValueError"
    assert len(run.error["message"]) == 4_000  # bounded, not refused


def test_the_last_two_children_finishing_at_once_still_join(recording_dispatcher):
    """Each one's probe sees the other still running: whoever commits second joins."""
    run = agentflow.start("tests.fan", {"n": 2})
    assert executor.advance(run.id, worker="t") == "waiting"
    first, second = (child_runner._claim(step_id) for step_id, _ in RecordingDispatcher.children)
    probed, finish = threading.Event(), threading.Event()

    def finish_first() -> None:
        # First's outcome is written and its probe has run, but it has not committed yet.
        outcome = child_runner.ChildOutcome(first)
        try:
            with transaction.atomic():
                outcome.succeeded(first.attempt, "2")
                probed.set()
                finish.wait(30)
            outcome.committed(Step.Status.SUCCEEDED)
        finally:
            connection.close()

    thread = threading.Thread(target=finish_first)
    thread.start()
    assert probed.wait(30)
    child_runner.ChildOutcome(second).close(Step.Status.SUCCEEDED, "4", None)  # sees first open
    parent = Step.objects.get(run=run, position=0, index__isnull=True)
    assert parent.status == Step.Status.WAITING  # not yet: first has not committed
    finish.set()
    thread.join(30)
    parent.refresh_from_db()
    assert parent.status == Step.Status.SUCCEEDED  # joined without a chord body or reconciler
    assert RecordingDispatcher.sent[-1][0] == run.id  # and the run was woken


def test_a_join_that_waits_on_a_concurrent_update_of_the_parent_still_closes_it(
    recording_dispatcher,
):
    """Postgres re-checks the waited-for row with every subquery forced; none may break it."""
    run = agentflow.start("tests.fan", {"n": 3})
    assert executor.advance(run.id, worker="t") == "waiting"
    run_all_children(RecordingDispatcher.children)
    parent = Step.objects.get(run=run, position=0, index__isnull=True)
    Step.objects.filter(id=parent.id).update(status=Step.Status.WAITING, finished_at=None)
    locked, release = threading.Event(), threading.Event()

    def hold_the_parent() -> None:
        try:
            with transaction.atomic():
                Step.objects.filter(id=parent.id).update(heartbeat_at=None)
                locked.set()
                release.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=hold_the_parent)
    thread.start()
    assert locked.wait(30)
    joined: list[object] = []

    def join() -> None:
        try:
            joined.append(fan_out_record.join(run.id, 0))
        except Exception as exc:  # reported by the assertion below
            joined.append(exc)
        finally:
            connection.close()

    joiner = threading.Thread(target=join)
    joiner.start()
    wait_until(waiting_on_a_row_lock, timeout=30, what="the join to wait for the parent's row")
    release.set()
    thread.join(30)
    joiner.join(30)
    assert joined == [True]
    parent.refresh_from_db()
    assert parent.status == Step.Status.SUCCEEDED

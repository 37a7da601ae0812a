"""The engine at its ports: leases, wake-ups and the reconciler, on real PostgreSQL.

These drive ``executor.advance`` in this process with a recording dispatcher; the
Celery path is covered by the worker tests.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest
from django.utils import timezone

import agentflow
from agentflow._engine import executor, leases, reconciler
from agentflow.models import Event, Run, Step
from tests.support import run_ids

pytestmark = pytest.mark.django_db(transaction=True)


def test_advance_runs_a_run_to_completion_and_writes_ordered_events(recording_dispatcher):
    run = agentflow.start("tests.mixed", {"n": 4})
    assert run_ids(recording_dispatcher) == [run.id]
    assert executor.advance(run.id, worker="test") == "succeeded"
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED
    assert run.lease_expires_at is None
    types = list(Event.objects.filter(run=run).order_by("seq").values_list("type", flat=True))
    assert types[:2] == ["run.created", "run.started"]
    assert types[-1] == "run.succeeded"
    seqs = list(Event.objects.filter(run=run).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    assert executor.advance(run.id, worker="test") == "skipped"  # finished runs stay finished


def test_a_held_lease_turns_a_second_advance_into_a_wake_up_for_the_holder(recording_dispatcher):
    run = agentflow.start("tests.waiter", {})
    lease = leases.acquire(run.id, "holder")
    assert isinstance(lease, leases.Lease)
    recording_dispatcher.clear()
    # The holder may be dead: the wake-up comes back just after its lease runs out.
    assert executor.advance(run.id, worker="intruder") == "deferred"
    expires = Run.objects.get(id=run.id).lease_expires_at
    [(woken, eta)] = recording_dispatcher
    assert woken == run.id
    assert expires < eta <= expires + timedelta(seconds=1.05)
    # A duplicate finds that wake-up on its way and adds none.
    assert executor.advance(run.id, worker="intruder") == "skipped"
    assert len(recording_dispatcher) == 1
    assert Run.objects.get(id=run.id).wake_seq == lease.wake_seq + 2
    # The holder cannot park the run: something it waits on may have arrived meanwhile.
    assert leases.release_waiting(lease, reason="test", wake_at=None) is False
    assert leases.release_waiting(lease, reason="test", wake_at=None) is True
    assert Run.objects.get(id=run.id).status == Run.Status.WAITING


def test_a_stale_lease_holder_cannot_write(recording_dispatcher):
    from agentflow._engine.interrupts import LeaseLost
    from agentflow._engine.state import step_rows

    run = agentflow.start("tests.mixed", {"n": 1})
    stale = leases.acquire(run.id, "stale")
    Run.objects.filter(id=run.id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    fresh = leases.acquire(run.id, "fresh")
    assert fresh.fence.token == stale.fence.token + 1
    with pytest.raises(LeaseLost):
        step_rows.insert_step(
            stale.fence,
            position=0,
            kind="step",
            name="x",
            status="succeeded",
            args_json="[]",
            args_hash="0",
            output_json="1",
        )
    assert not Step.objects.filter(run=run).exists()
    assert leases.renew(stale) is False
    assert leases.renew(fresh) is True


def test_signal_during_an_advance_is_not_lost(recording_dispatcher):
    run = agentflow.start("tests.waiter", {})
    lease = leases.acquire(run.id, "holder")
    agentflow.signal(run, "go", 7)  # arrives while the run is held
    assert leases.release_waiting(lease, reason="waiting", wake_at=None) is False
    Run.objects.filter(id=run.id).update(lease_expires_at=None, status=Run.Status.WAITING)
    assert executor.advance(run.id, worker="test") == "succeeded"
    assert Run.objects.get(id=run.id).output == {"got": 7}


def test_reconciler_wakes_dead_leases_due_timers_and_lost_starts_once(recording_dispatcher):
    now = timezone.now()
    make = Run.objects.create
    dead = make(
        agent="tests.mixed",
        agent_version="1",
        status="running",
        lease_token=1,
        lease_expires_at=now - timedelta(seconds=1),
        input={"n": 1},
    )
    alive = make(
        agent="tests.mixed",
        agent_version="1",
        status="running",
        lease_token=1,
        lease_expires_at=now + timedelta(seconds=60),
        input={"n": 1},
    )
    due = make(
        agent="tests.mixed",
        agent_version="1",
        status="waiting",
        wake_at=now - timedelta(seconds=1),
        input={"n": 1},
    )
    later = make(
        agent="tests.mixed",
        agent_version="1",
        status="waiting",
        wake_at=now + timedelta(seconds=60),
        input={"n": 1},
    )
    lost = make(agent="tests.mixed", agent_version="1", input={"n": 1})
    Run.objects.filter(id=lost.id).update(created_at=now - timedelta(minutes=1))
    fresh = make(agent="tests.mixed", agent_version="1", input={"n": 1})
    done = make(
        agent="tests.mixed",
        agent_version="1",
        status="succeeded",
        wake_at=now - timedelta(seconds=1),
        input={"n": 1},
    )

    woken = reconciler.reconcile()
    assert woken == {"running": 1, "waiting": 1, "pending": 1}
    assert set(run_ids(recording_dispatcher)) == {dead.id, due.id, lost.id}
    assert not {alive.id, later.id, fresh.id, done.id} & set(run_ids(recording_dispatcher))
    # A second pass within a lease does not send the same wake-ups again.
    assert reconciler.reconcile() == {}


def test_a_wake_up_after_a_sleep_is_scheduled_at_the_timer(recording_dispatcher):
    run = agentflow.start("tests.sleeper", {"seconds": 30})
    assert executor.advance(run.id, worker="test") == "waiting"
    run.refresh_from_db()
    (_, eta) = recording_dispatcher[-1]
    assert eta == run.wake_at
    assert "sleeping until" in run.wait_reason


def test_user_code_cannot_swallow_non_determinism(recording_dispatcher, monkeypatch):
    from tests.testapp import agents as test_agents

    run = agentflow.start("tests.variant", {})
    assert executor.advance(run.id, worker="test") == "waiting"

    def swallowing(ctx):
        with contextlib.suppress(Exception):
            ctx.call(test_agents.record_effect, tag="x")  # position 0 was a ctx.step
        return "carried on"

    monkeypatch.setattr(test_agents.variant, "fn", swallowing)
    agentflow.signal(run, "continue")
    assert executor.advance(run.id, worker="test") == "failed"
    run.refresh_from_db()
    assert run.error["type"] == "agentflow.exceptions.NonDeterminismError"


def test_a_database_failure_under_the_engine_leaves_the_run_to_be_retried(
    recording_dispatcher, monkeypatch
):
    import psycopg
    from django.db import connection

    from tests.testapp import agents as test_agents

    killed = []

    def kill_my_connection() -> str:
        """Terminate this process's own PostgreSQL session, once, as a failover would."""
        if not killed:
            pid = connection.connection.info.backend_pid
            params = connection.get_connection_params()
            with psycopg.connect(
                host=params["host"],
                port=params["port"],
                user=params["user"],
                dbname=params["dbname"],
                autocommit=True,
            ) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", [pid])
            killed.append(pid)
        return "survived"

    monkeypatch.setattr(test_agents.recorded, "fn", lambda ctx: ctx.step(kill_my_connection))
    run = agentflow.start("tests.recorded", {})
    recording_dispatcher.clear()
    assert executor.advance(run.id, worker="test") == "store-unavailable"
    # The wake-up comes back once the lease the database still shows has run out.
    [(woken, eta)] = recording_dispatcher
    assert woken == run.id and eta > timezone.now() + timedelta(seconds=2)
    run.refresh_from_db()
    assert run.status == Run.Status.RUNNING  # not failed: the lease will lapse and it resumes
    assert not Step.objects.filter(run=run).exists()

    Run.objects.filter(id=run.id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert reconciler.reconcile() == {"running": 1}
    assert executor.advance(run.id, worker="test") == "succeeded"
    run.refresh_from_db()
    assert (run.status, run.output) == (Run.Status.SUCCEEDED, "survived")


def test_one_reconciler_pass_runs_at_a_time_across_the_fleet(recording_dispatcher):
    import psycopg
    from django.db import connection

    params = connection.get_connection_params()
    other = psycopg.connect(
        host=params["host"], port=params["port"], user=params["user"], dbname=params["dbname"]
    )
    with other:  # another worker's pass holds the lock
        other.execute("SELECT pg_advisory_lock(%s)", [reconciler.LOCK_KEY])
        assert reconciler.reconcile_exclusively() is None
        other.execute("SELECT pg_advisory_unlock(%s)", [reconciler.LOCK_KEY])
    assert reconciler.reconcile_exclusively() == {}
    # The pass let go of the lock: another process takes it at once.
    with psycopg.connect(
        host=params["host"], port=params["port"], user=params["user"], dbname=params["dbname"]
    ) as third:
        [(taken,)] = third.execute("SELECT pg_try_advisory_lock(%s)", [reconciler.LOCK_KEY])
        assert taken


def test_a_divergence_shows_both_arguments_redacted_and_names_the_usual_causes(
    recording_dispatcher,
):
    run = agentflow.start("tests.uses_clock", {})
    assert executor.advance(run.id, worker="test") == "waiting"
    agentflow.signal(run, "go")
    assert executor.advance(run.id, worker="test") == "failed"
    run.refresh_from_db()
    message = run.error["message"]
    assert run.error["type"] == "agentflow.exceptions.NonDeterminismError"
    assert "the history has call 'tests.record_effect' with arguments {\"tag\": " in message
    assert "the code now asks for call 'tests.record_effect' with arguments {\"tag\": " in message
    assert "sk-live" not in message and message.count("[redacted] at ") == 2
    assert "the clock (use ctx.now())" in message and "ctx.step" in message


def test_engine_log_lines_say_which_run_they_are_about(recording_dispatcher, caplog):
    run = agentflow.start("tests.three_steps")
    Run.objects.filter(id=run.id).update(agent_version="9")  # a version not deployed here
    with caplog.at_level("WARNING", logger="agentflow.executor"):
        assert executor.advance(run.id, worker="test") == "version-missing"
    (record,) = [r for r in caplog.records if r.name == "agentflow.executor"]
    assert record.agentflow_run_id == str(run.id) and record.agentflow_position is None
    assert "waits" in record.getMessage()

"""Workers with wrong clocks: leases are stamped with the database's clock.

A red-team probe ran a worker whose clock was 2 h fast (its run stayed "running" past 30
leases after it died) and one 1 h slow (it had live leases taken over, and tools ran twice
without a crash). These tests run real worker processes under libfaketime (LD_PRELOAD,
Debian's faketime, installed by `make test`), so their clocks are really that far off.
"""

from __future__ import annotations

import glob
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection

import agentflow
from agentflow.models import Run, Step, clock
from tests.support import wait_until
from tests.test_recovery import assert_each_effect_once, slow_tool_started
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)

LEASE = timedelta(seconds=settings.AGENTFLOW["LEASE_SECONDS"])


def skewed(offset: str) -> dict[str, str]:
    """The environment of a process whose wall clock is ``offset`` off ("+2h", "-1h")."""
    (library,) = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    # The monotonic clock moves with it (libfaketime's sleeps fail otherwise); durations
    # measured on it stay right.
    return {"LD_PRELOAD": library, "FAKETIME": offset, "FAKETIME_NO_CACHE": "1"}


def database_now():
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


def test_the_clock_reads_the_databases_time_whatever_this_machines_says(monkeypatch):
    from django.utils import timezone

    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(hours=2))
    clock.forget()
    try:
        assert abs(clock.now() - database_now()) < timedelta(seconds=1)
        assert timedelta(hours=-2, seconds=-1) < clock.offset() < timedelta(hours=-2, seconds=1)
    finally:
        monkeypatch.undo()
        clock.forget()


def test_a_worker_two_hours_fast_leaves_a_lease_that_expires_within_one_lease(workers):
    fast = workers("fast", concurrency=1, env=skewed("+2h"))
    run = agentflow.start("tests.crashy", {"hold": 120})
    slow_tool_started(run)
    expires = Run.objects.get(id=run.id).lease_expires_at
    assert expires - database_now() <= LEASE + timedelta(seconds=1), expires
    workers("survivor", concurrency=2)
    fast.kill()
    # The survivor takes the run over after one lease (not two hours) and finishes it.
    wait_until(
        lambda: Execution.objects.filter(key=f"{run.id}:3").count() == 2,
        timeout=60,
        what="the survivor to run the killed worker's step again",
    )
    assert_each_effect_once(agentflow.wait(run, timeout=60))


def test_a_worker_an_hour_slow_keeps_its_lease_and_no_tool_runs_twice(workers):
    workers("slow", concurrency=1, env=skewed("-1h"))
    # The slow tool holds for several leases while the slow worker renews its lease.
    run = agentflow.start("tests.crashy", {"hold": 4 * LEASE.total_seconds()})
    slow_tool_started(run)
    # A worker with a right clock, whose reconciler runs every second, sees a live lease.
    workers("right", concurrency=2)
    run = agentflow.wait(run, timeout=90)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert Execution.objects.filter(key=f"{run.id}:3").count() == 1, "the tool ran twice"


def test_a_timer_on_a_worker_two_hours_fast_waits_its_duration_on_the_databases_clock(workers):
    workers("fast", concurrency=1, env=skewed("+2h"))
    seconds = 5.0
    began = database_now()
    run = agentflow.start("tests.sleeper", {"seconds": seconds})
    sleep = wait_until(
        lambda: Step.objects.filter(run=run, kind=Step.Kind.SLEEP).first(),
        timeout=60,
        what="the run to start its timer",
    )
    # Due its duration after the database's now, not two hours later.
    assert sleep.wake_at - sleep.started_at == timedelta(seconds=seconds)
    assert abs(sleep.started_at - database_now()) < timedelta(seconds=5), sleep.started_at
    run = agentflow.wait(run, timeout=60)
    waited = database_now() - began
    assert run.status == Run.Status.SUCCEEDED, run.error
    # It did not fire at once (nor wait for hours), measured on the database's clock.
    assert timedelta(seconds=seconds) <= waited < timedelta(seconds=seconds + 20), waited
    sleep.refresh_from_db()
    assert sleep.finished_at - sleep.started_at >= timedelta(seconds=seconds)
    assert run.output["slept"] >= seconds  # ctx.now() reads the database's clock as well

"""Recovery with no beat: put-off wake-ups, the reconciler in every worker, control first.

Each test kills real worker processes with SIGKILL and starts no beat. Lease lengths come
from tests.settings (LEASE_SECONDS = 3).
"""

from __future__ import annotations

import os
import signal
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

import agentflow
from agentflow.models import Run, Step
from tests.support import wait_until
from tests.testapp.models import Execution, SideEffect

pytestmark = pytest.mark.django_db(transaction=True)

LEASE = timedelta(seconds=settings.AGENTFLOW["LEASE_SECONDS"])
# A worker whose own reconciler would not run during the test.
NO_RECONCILER = {"AGENTFLOW_TEST_RECONCILE_EVERY": "3600"}


def slow_tool_started(run: Run) -> Execution:
    """Wait for the first execution of tests.crashy's slow tool (position 3)."""
    return wait_until(
        lambda: Execution.objects.filter(key=f"{run.id}:3").first(),
        timeout=30,
        what="the slow tool to start",
    )


def resumed_at(run: Run) -> timezone.datetime:
    """When the slow tool ran again: the killed run's next step."""
    again = wait_until(
        lambda: Execution.objects.filter(key=f"{run.id}:3").order_by("id")[1:2].first(),
        timeout=60,
        what="the killed run to take its next step",
    )
    return again.created_at


def assert_each_effect_once(run: Run) -> None:
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert SideEffect.objects.filter(key__startswith=f"{run.id}:").count() == 7
    for position in (0, 1, 2, 4, 5, 6):
        assert Execution.objects.filter(key=f"{run.id}:{position}").count() == 1
    assert Step.objects.get(run=run, position=3).attempts == 2


def test_a_wake_up_that_finds_a_dead_holders_lease_is_put_off_not_dropped(workers):
    # Only the put-off wake-up can bring this run back: no beat, and the worker's own
    # reconciler does not run during the test.
    workers("w1", concurrency=2, env=NO_RECONCILER)
    run = agentflow.start("tests.crashy", {"hold": 120})
    first = slow_tool_started(run)

    killed_at = timezone.now()
    os.kill(first.pid, signal.SIGKILL)  # one pool process: Celery redelivers its message

    assert resumed_at(run) - killed_at < 3 * LEASE
    run = agentflow.wait(run, timeout=60)
    assert_each_effect_once(run)


def test_the_reconciler_runs_in_every_worker_so_a_dead_worker_needs_no_beat(workers):
    doomed = workers("doomed", concurrency=1)
    run = agentflow.start("tests.crashy", {"hold": 120})
    slow_tool_started(run)
    workers("survivor", concurrency=2)

    killed_at = timezone.now()
    doomed.kill()  # the whole worker: its unacked message waits for the visibility timeout

    assert resumed_at(run) - killed_at < 3 * LEASE
    run = agentflow.wait(run, timeout=60)
    assert_each_effect_once(run)


def test_killed_runs_resume_ahead_of_100_queued_slow_children(workers):
    doomed = workers("doomed", concurrency=1)
    killed_runs = [agentflow.start("tests.crashy", {"hold": 120})]
    slow_tool_started(killed_runs[0])
    workers("survivor", concurrency=2)
    fan = agentflow.start("tests.fan", {"n": 100, "pause": 0.6})
    children = Execution.objects.filter(key__startswith=f"{fan.id}:0:")  # the map's children
    wait_until(
        lambda: children.count() >= 2,
        timeout=30,
        what="the survivor to work on the slow children",
    )

    killed_at = timezone.now()
    doomed.kill()

    resumed = resumed_at(killed_runs[0])
    assert resumed - killed_at < 3 * LEASE
    # It did not wait for the queue: most slow children had not started yet.
    assert children.filter(created_at__lte=resumed).count() < 50
    run = agentflow.wait(killed_runs[0], timeout=60)
    assert_each_effect_once(run)
    fan = agentflow.wait(fan, timeout=180)
    assert fan.status == Run.Status.SUCCEEDED, fan.error
    assert SideEffect.objects.filter(key__startswith=f"{fan.id}:0:").count() == 100
    assert children.count() == 100


def test_a_fan_out_child_killed_with_its_worker_reruns_ahead_of_100_queued_children(workers):
    doomed = workers("doomed", concurrency=1)
    held = agentflow.start("tests.held_fan", {"n": 1, "hold": 120})
    key = f"{held.id}:0:0"
    wait_until(
        lambda: Execution.objects.filter(key=key).exists(),
        timeout=30,
        what="the child to start on the doomed worker",
    )
    workers("survivor", concurrency=2)
    fan = agentflow.start("tests.fan", {"n": 100, "pause": 0.6})
    children = Execution.objects.filter(key__startswith=f"{fan.id}:0:")
    wait_until(lambda: children.count() >= 2, timeout=30, what="the slow children to start")

    killed_at = timezone.now()
    doomed.kill()

    again = wait_until(
        lambda: Execution.objects.filter(key=key).order_by("id")[1:2].first(),
        timeout=60,
        what="the killed child to run again",
    )
    assert again.created_at - killed_at < 3 * LEASE
    assert children.filter(created_at__lte=again.created_at).count() < 50
    held = agentflow.wait(held, timeout=60)
    assert held.status == Run.Status.SUCCEEDED, held.error
    assert held.output == [0]
    assert Execution.objects.filter(key=key).count() == 2
    assert agentflow.wait(fan, timeout=180).status == Run.Status.SUCCEEDED
    assert children.count() == 100

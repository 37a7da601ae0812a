"""The fleet's census: worker processes counted by the tasks they run at once, on real
workers and Redis, and fan-outs that size their header tasks by it."""

from __future__ import annotations

import re

import pytest

import agentflow
from agentflow._guardrails import fleet
from agentflow._guardrails.stores import MemoryLimitStore, RedisLimitStore
from agentflow.models import Run
from tests.support import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_census_counts_live_processes_by_their_slots(settings, redis_client):
    store = RedisLimitStore(settings.REDIS_URL)
    assert store.fleet_slots() == 0
    store.announce("host:1", 1, 30)
    store.announce("host:2", 4, 30)
    store.announce("host:1", 1, 30)  # renewed, not counted twice
    assert store.fleet_slots() == 5
    store.announce("host:3", 2, 0.05)  # a process that stops announcing
    wait_until(lambda: store.fleet_slots() == 5, timeout=10, what="host:3 to drop out")
    assert MemoryLimitStore().fleet_slots() is None  # one process cannot see the fleet


def test_a_prefork_worker_counts_each_child_and_drops_out_when_killed(workers):
    worker = workers("w1", concurrency=3)
    wait_until(lambda: fleet.slots() == 3, timeout=30, what="3 prefork children announced")
    worker.kill()  # SIGKILL: nobody says goodbye; the announcements expire within a lease
    wait_until(lambda: fleet.slots() is None, timeout=30, what="the dead worker to drop out")


def test_a_thread_pool_counts_its_concurrency(workers):
    workers("w1", concurrency=3, pool="threads")
    wait_until(lambda: fleet.slots() == 3, timeout=30, what="a 3-thread worker announced")


def header_tasks_received(worker) -> list[str]:
    return re.findall(r"Task (agentflow\.run_tools?)\[[^]]*\] received", worker.log())


def test_a_fan_out_sends_twice_the_fleet_s_slots_as_header_tasks(workers):
    # (A task that ran long would send its rest on: not here, whatever the machine's speed.)
    worker = workers("w1", concurrency=2, env={"AGENTFLOW_TEST_FAN_OUT_TASK_SECONDS": "60"})
    wait_until(lambda: fleet.slots() == 2, timeout=30, what="2 prefork children announced")
    run = agentflow.wait(agentflow.start("tests.fan", {"n": 40}), timeout=120)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output["doubled"] == [2 * i for i in range(40)]
    # 4 tasks of 10 children each, not 40 tasks: each would cost its own message.
    assert header_tasks_received(worker) == ["agentflow.run_tools"] * 4


def test_a_task_of_slow_children_sends_the_rest_back_after_each_one(workers):
    worker = workers("w1", concurrency=1)
    wait_until(lambda: fleet.slots() == 1, timeout=30, what="1 prefork child announced")
    # 2 tasks of 3 children; each child (0.3 s) outlasts FAN_OUT_TASK_SECONDS (0.25 s), so
    # each task runs one and sends the rest on: 3 + 3 tasks, and a control message queued
    # meanwhile would have waited for one child only.
    run = agentflow.wait(agentflow.start("tests.fan", {"n": 6, "pause": 0.3}), timeout=120)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output["doubled"] == [2 * i for i in range(6)]
    assert header_tasks_received(worker) == ["agentflow.run_tools"] * 6


@pytest.mark.parametrize("kind", ["redis", "memory"])
def test_one_process_per_period_takes_the_turn(kind, settings, redis_client):
    if kind == "redis":  # two clients: two processes deciding through one Redis
        first, second = RedisLimitStore(settings.REDIS_URL), RedisLimitStore(settings.REDIS_URL)
    else:  # one process: its own turns
        first = second = MemoryLimitStore()
    assert first.take_turn("reconcile:0.3", 0.3)
    assert not second.take_turn("reconcile:0.3", 0.3)  # this period's pass is taken
    assert not first.take_turn("reconcile:0.3", 0.3)
    assert second.take_turn("reconcile:60", 60)  # another period: turns of its own
    wait_until(lambda: second.take_turn("reconcile:0.3", 0.3), timeout=10, what="the next period")


def test_the_heartbeat_s_pass_runs_once_per_period_across_processes(settings, redis_client):
    from agentflow._engine import reconciler

    settings.AGENTFLOW = {**settings.AGENTFLOW, "RECONCILE_EVERY": 30.0}
    assert reconciler.reconcile_in_turn() is not None  # the first offer takes the turn
    # Another process (it decides through the same Redis) offers within the period: no pass.
    assert reconciler.reconcile_in_turn() is None
    assert reconciler.reconcile_exclusively() is not None  # explicit triggers always run

"""Fan-out as Celery chords on real workers, Redis and PostgreSQL."""

from __future__ import annotations

import time

import pytest
from django.db.models import Count

import agentflow
from agentflow.models import Event, Run, Step
from tests.support import all_at_once, wait_until
from tests.testapp.models import Execution, SideEffect

pytestmark = pytest.mark.django_db(transaction=True)


def joins(run: Run) -> int:
    return Event.objects.filter(run=run, type="step.completed", data__joined=True).count()


def test_fan_out_of_500_over_two_workers_in_order_with_each_key_once(workers):
    workers("w1", concurrency=4)
    workers("w2", concurrency=4)
    run = agentflow.start("tests.fan", {"n": 500})
    run = agentflow.wait(run, timeout=120)

    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output["doubled"] == [i * 2 for i in range(500)]
    keys = {f"{run.id}:0:{i}" for i in range(500)}
    assert set(SideEffect.objects.values_list("key", flat=True)) == keys
    children = Step.objects.filter(run=run, position=0, index__isnull=False)
    assert children.count() == 500
    assert set(children.values_list("status", flat=True)) == {"succeeded"}
    assert {
        row["n"]
        for row in Execution.objects.filter(key__in=keys).values("key").annotate(n=Count("id"))
    } == {1}
    assert joins(run) == 1


def test_failures_raise_after_all_children_or_stand_in_their_slots(workers):
    workers("w1", concurrency=4)
    run = agentflow.wait(agentflow.start("tests.fan_errors", {"n": 7}), timeout=60)
    assert run.status == Run.Status.SUCCEEDED, run.error
    slots = run.output["slots"]
    assert slots[1] == 1 and slots[2] == 2 and slots[4] == 4
    assert (
        slots[0].startswith("ToolError: Tool 'tests.maybe_fail' failed")
        and "item 0 is bad" in slots[0]
    )
    assert slots[3].startswith("ToolError") and slots[6].startswith("ToolError")
    assert "3 of 7 calls of map tests.maybe_fail failed" in run.output["raised"]
    assert (
        "[0]" in run.output["raised"]
        and "[3]" in run.output["raised"]
        and "[6]" in run.output["raised"]
    )


def test_parallel_runs_different_tools_and_refuses_bad_args_per_call(workers):
    workers("w1", concurrency=2)
    run = agentflow.wait(agentflow.start("tests.mixed_parallel", {}), timeout=60)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output == ["ax2", 42, "ToolArgumentError"]
    assert Execution.objects.filter(key="typed").count() == 1  # the bad call never ran


def test_sigkill_in_the_middle_of_a_200_child_fan_out(workers):
    doomed = workers("doomed", concurrency=4)
    workers("survivor", concurrency=4, beat=True)
    run = agentflow.start("tests.fan", {"n": 200, "pause": 0.05})
    children = Step.objects.filter(run=run, position=0, index__isnull=False)
    wait_until(
        lambda: children.filter(status="succeeded").count() >= 40,
        timeout=60,
        what="a fifth of the children to finish",
    )
    doomed.kill()
    run = agentflow.wait(run, timeout=90)

    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output["doubled"] == [i * 2 for i in range(200)]
    assert SideEffect.objects.filter(key__startswith=f"{run.id}:0:").count() == 200
    assert joins(run) == 1
    # The run itself advanced past the fan-out exactly once: its next step ran once.
    assert Execution.objects.filter(key=f"{run.id}:step:200").count() == 1


def test_redis_flushall_in_the_middle_of_a_fan_out(workers, private_redis, redis_client):
    # FLUSHALL wipes every database of a server: this test flushes a server of its own.
    workers("w1", concurrency=2, beat=True, env=private_redis.env)
    run = agentflow.start("tests.fan", {"n": 200, "pause": 0.05})
    children = Step.objects.filter(run=run, position=0, index__isnull=False)
    wait_until(
        lambda: children.filter(status="succeeded").count() >= 20,
        timeout=60,
        what="some children to finish",
    )
    assert private_redis.client.dbsize() and not redis_client.dbsize()  # all on its own server
    private_redis.client.flushall()  # queued messages and chord counters are gone
    run = agentflow.wait(run, timeout=90)

    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output["doubled"] == [i * 2 for i in range(200)]
    assert SideEffect.objects.filter(key__startswith=f"{run.id}:0:").count() == 200
    assert joins(run) == 1


def test_chord_body_delivered_twice_re_advances_once(workers):
    from agentflow.tasks import join
    from tests.testapp.models import Flag

    workers("w1", concurrency=4)
    workers("w2", concurrency=2)
    run = agentflow.start("tests.claims_fan_then_wait", {"n": 3, "flag": "open"})
    children = Step.objects.filter(run=run, position=0, index__isnull=False)
    wait_until(
        lambda: Execution.objects.filter(key__startswith=f"{run.id}:0:").count() == 3,
        timeout=60,
        what="the three children to hold the fan-out open",
    )
    # Duplicate chord bodies while the fan-out is open: real workers run them. None may
    # join, so none may wake the run or let a worker advance it.
    before = Run.objects.values_list("wake_seq", "lease_token").get(id=run.id)
    early = [join.delay(None, str(run.id), 0) for _ in range(3)]
    assert [result.get(timeout=30) for result in early] == [False] * 3
    assert Run.objects.values_list("wake_seq", "lease_token").get(id=run.id) == before
    assert children.filter(status="running").count() == 3  # still open
    assert joins(run) == 0

    # Release the children and race more duplicates against the fan-out's own join.
    Flag.objects.create(name="open")
    late = [join.delay(None, str(run.id), 0) for _ in range(3)]
    won = [result.get(timeout=30) for result in late]
    wait_until(
        lambda: Step.objects.filter(run=run, kind="wait", status="waiting").exists(),
        timeout=60,
        what="the run to pass the fan-out and wait for its signal",
    )
    # Counted once every duplicate was handled: the join re-advanced the run once. (A join
    # that wins writes this event and sends the one advance; wake_seq and the lease token
    # also count the reconciler's own nudges, so they are no measure of joins.)
    assert won.count(True) <= 1
    assert joins(run) == 1
    assert Execution.objects.filter(key=f"{run.id}:step:3").count() == 1

    agentflow.signal(run, "go")
    run = agentflow.wait(run, timeout=60)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output == {"held": ["open"] * 3, "after": 9}
    assert Execution.objects.filter(key__endswith=":returned").count() == 3  # each child once


def test_concurrent_joins_win_once_in_process():
    from agentflow._engine import fan_out_record

    run = Run.objects.create(agent="tests.fan", agent_version="1", input={"n": 0}, status="waiting")
    Step.objects.create(run=run, position=0, kind="map", name="x", status="waiting")
    outcomes = all_at_once(lambda: fan_out_record.join(run.id, 0), threads=8)
    assert sorted(outcomes) == [False] * 7 + [True]
    assert Run.objects.get(id=run.id).wake_seq == 1


def test_five_thousand_children_in_one_map(workers):
    workers("w1", concurrency=4)
    workers("w2", concurrency=4)
    started = time.monotonic()
    run = agentflow.wait(agentflow.start("tests.fan", {"n": 5000}), timeout=300)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output["doubled"] == [i * 2 for i in range(5000)]
    assert joins(run) == 1
    print(f"5,000 children in {time.monotonic() - started:.1f}s")


def test_start_with_the_same_key_from_20_threads_makes_one_run():
    runs = all_at_once(
        lambda: agentflow.start("tests.mixed", {"n": 1}, idempotency_key="once").id, threads=20
    )
    assert len(runs) == 20
    assert len(set(runs)) == 1
    assert Run.objects.filter(idempotency_key="once").count() == 1

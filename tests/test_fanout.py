"""Fan-out as Celery chords on real workers, Redis and PostgreSQL."""

from __future__ import annotations

import pytest
from django.db.models import Count

import agentflow
from agentflow.models import Event, Run, Step
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

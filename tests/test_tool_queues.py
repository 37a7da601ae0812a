"""``@tool(queue=...)``: the tool's calls run only on workers that consume that queue."""

from __future__ import annotations

import pytest

import agentflow
from agentflow.models import Run, Step
from tests.faults import FAULT, MARK
from tests.support import wait_until
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


def test_calls_and_fan_out_children_of_a_queued_tool_run_on_that_queue_only(workers):
    workers("main", env={"AGENTFLOW_TEST_WORKER_NAME": "main"}, queues="celery")
    run = agentflow.start("tests.side_queue", {"n": 3})
    # No worker consumes "side" yet: the run waits for its call there, nothing runs inline.
    wait_until(
        lambda: "on queue 'side'" in Run.objects.get(id=run.id).wait_reason,
        timeout=30,
        what="the run to wait for its call on the side queue",
    )
    assert not Execution.objects.filter(key__startswith="side:").exists()

    workers("side", env={"AGENTFLOW_TEST_WORKER_NAME": "side"}, queues="side")
    run = agentflow.wait(run, timeout=60)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output == {
        "one": {"i": -1, "worker": "side"},
        "many": [{"i": i, "worker": "side"} for i in range(3)],
    }
    assert Execution.objects.filter(key="side:side").count() == 4
    assert not Execution.objects.filter(key="side:main").exists()
    # The routed call reads like any call: one row of kind "call" with its output.
    call = Step.objects.get(run=run, position=0, index__isnull=True)
    assert (call.kind, call.status, call.output) == (
        "call",
        Step.Status.SUCCEEDED,
        {"i": -1, "worker": "side"},
    )
    report = agentflow.replay(run)
    assert report.ok, report.mismatches


def test_a_routed_call_whose_worker_died_before_the_join_and_redis_was_flushed_is_joined(
    workers, redis_client, tmp_path
):
    """The child committed, its worker died before it joined, and Redis lost the chord:
    the reconciler joins the one-child fan-out of kind "call" from the database."""
    # No reconciler may run between the death and the flush, or it would join before the
    # chord is lost: the main worker records the call, then stops before the side one runs.
    main = workers("main", queues="celery")
    run = agentflow.start("tests.side_queue", {"n": 0})
    wait_until(
        lambda: "on queue 'side'" in Run.objects.get(id=run.id).wait_reason,
        timeout=30,
        what="the run to wait for its call on the side queue",
    )
    main.stop()
    fault = {FAULT: "before_join", MARK: str(tmp_path / "died")}
    side = workers("side", queues="side", env={"AGENTFLOW_TEST_WORKER_NAME": "side", **fault})
    wait_until(lambda: not side.alive(), timeout=60, what="the side worker to die at its join")
    child = Step.objects.get(run=run, position=0, index=0)
    assert child.status == Step.Status.SUCCEEDED  # recorded before the worker died
    assert Step.objects.get(run=run, position=0, index__isnull=True).status == "waiting"
    redis_client.flushdb()  # the chord body and the unacked message are gone too
    workers("main-again", queues="celery")
    run = agentflow.wait(run, timeout=60)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output == {"one": {"i": -1, "worker": "side"}, "many": []}
    assert Execution.objects.filter(key="side:side").count() == 1

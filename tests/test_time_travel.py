"""Retrying a failed run from its failed step, forking a run at a position, comparing runs.

Runtime behaviour runs on real Celery workers with PostgreSQL and Redis; Execution rows
count how often each step or tool body ran.
"""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

import agentflow
from agentflow.models import Event, Run, Step
from tests.testapp.models import Execution, Flag, SideEffect


def executions(key: str) -> int:
    return Execution.objects.filter(key=key).count()


def events(run: Run, type_: str) -> list[dict]:
    return list(
        Event.objects.filter(run=run, type=type_).order_by("seq").values_list("data", flat=True)
    )


# -- resume: retrying a failed run ------------------------------------------------------


def test_a_failed_run_retried_after_the_fix_succeeds_and_earlier_effects_ran_once(workers):
    workers("w1")
    flag = f"fixed-{uuid.uuid4().hex[:8]}"
    run = agentflow.wait(agentflow.start("tests.tt_retry", {"flag": flag}), timeout=60)
    assert run.status == Run.Status.FAILED, run.error
    assert run.error["position"] == 2 and "flag" in run.error["message"]

    Flag.objects.create(name=flag)  # the operator fixes the cause
    resumed = agentflow.resume(run, by="ops")
    assert resumed.status in Run.ACTIVE and resumed.error is None
    run = agentflow.wait(run, timeout=60)

    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output == {
        "before": ["before-0:done", "before-1:done"],
        "gated": f"{flag}:ok",
        "after": "after:done",
    }
    assert executions(f"{run.id}:0") == executions(f"{run.id}:1") == 1
    assert executions(f"{run.id}:2") == 2  # failed once, then ran again
    assert executions(f"{run.id}:3") == 1
    assert SideEffect.objects.filter(key__startswith=f"{run.id}:").count() == 3
    (event,) = events(run, "run.resumed")
    assert event["by"] == "ops"
    assert event["retried"] == {"position": 2, "kind": "call", "name": "tests.tt_gated"}
    assert event["previous_error"]["position"] == 2
    assert "flag" in event["previous_error"]["message"]
    assert [type_ for type_ in Event.objects.filter(run=run).values_list("type", flat=True)][
        -1
    ] == "run.succeeded"


def test_a_failed_fan_out_retries_only_its_failed_children(workers):
    workers("w1")
    flag = f"fixed-{uuid.uuid4().hex[:8]}"
    run = agentflow.wait(agentflow.start("tests.tt_fan_retry", {"n": 4, "flag": flag}), timeout=60)
    assert run.status == Run.Status.FAILED and run.error["position"] == 1, run.error

    Flag.objects.create(name=flag)
    agentflow.resume(run)
    run = agentflow.wait(run, timeout=60)

    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output == {"first": "first:done", "mapped": [0, 10, 20, 30]}
    assert executions(f"{run.id}:0") == 1
    assert [executions(f"{run.id}:1:{i}") for i in range(4)] == [1, 2, 1, 2]
    children = Step.objects.filter(run=run, position=1, index__isnull=False)
    assert set(children.values_list("status", flat=True)) == {Step.Status.SUCCEEDED}
    (event,) = events(run, "run.resumed")
    assert event["retried"] == {"position": 1, "kind": "map", "name": "tests.tt_gated_child",
                                "children": 2}  # fmt: skip


def test_a_run_that_failed_in_its_own_code_runs_its_code_again(workers):
    workers("w1")
    flag = f"fixed-{uuid.uuid4().hex[:8]}"
    run = agentflow.wait(agentflow.start("tests.tt_raises", {"flag": flag}), timeout=60)
    assert run.status == Run.Status.FAILED and run.error["type"] == "builtins.ValueError"

    Flag.objects.create(name=flag)
    run = agentflow.wait(agentflow.resume(run), timeout=60)

    assert run.status == Run.Status.SUCCEEDED and run.output == "once:done"
    assert executions(f"{run.id}:0") == 1  # the recorded call is replayed, not re-run
    (event,) = events(run, "run.resumed")
    assert event["retried"] is None and event["previous_error"]["type"] == "builtins.ValueError"


@pytest.mark.django_db
def test_only_paused_or_failed_runs_can_be_resumed(recording_dispatcher):
    run = agentflow.start("tests.tt_steps", {"n": 1})
    with pytest.raises(agentflow.InvalidState, match="pending; only a paused run"):
        agentflow.resume(run)
    agentflow.cancel(run)
    with pytest.raises(agentflow.InvalidState, match=r"cancelled.*agentflow.fork"):
        agentflow.resume(run)
    Run.objects.filter(id=run.id).update(status=Run.Status.SUCCEEDED)
    with pytest.raises(agentflow.InvalidState, match="succeeded"):
        agentflow.resume(run)
    assert not events(run, "run.resumed")


# -- fork -------------------------------------------------------------------------------


def test_a_fork_keeps_the_steps_before_its_position_and_re_executes_the_rest(workers):
    workers("w1")
    salt = uuid.uuid4().hex[:8]
    source = agentflow.wait(agentflow.start("tests.tt_steps", {"n": 4, "salt": salt}), timeout=60)
    assert source.status == Run.Status.SUCCEEDED
    Flag.objects.create(name="tt-salt-3")  # position 3 computes something else from now on

    fork = agentflow.fork(source, at=2, by="ops")
    assert fork.parent_id == source.id and fork.id != source.id
    fork = agentflow.wait(fork, timeout=60)

    assert fork.status == Run.Status.SUCCEEDED, fork.error
    assert (fork.agent, fork.agent_version, fork.input) == (
        source.agent,
        source.agent_version,
        source.input,
    )
    assert [executions(f"tt:{salt}:{i}") for i in range(4)] == [1, 1, 2, 2]
    assert fork.output == [f"0{salt}", f"1{salt}", f"2{salt}", f"3{salt}+changed"]
    assert events(fork, "run.forked") == [{"from": str(source.id), "at": 2, "by": "ops"}]
    assert events(source, "run.forked") == [{"to": str(fork.id), "at": 2, "by": "ops"}]
    assert events(fork, "run.created")

    comparison = agentflow.compare(source, fork)
    assert isinstance(comparison, agentflow.RunComparison)
    assert comparison.first_difference == 3 and not comparison.equal
    assert [s.equal for s in comparison.steps] == [True, True, True, False]
    last = comparison.steps[3]
    assert last.same_call and last.args_equal and not last.outputs_equal
    assert (last.a.output, last.b.output) == (f"3{salt}", f"3{salt}+changed")
    assert comparison.input_equal and not comparison.output_equal


def test_a_fork_after_a_fan_out_keeps_its_children_and_runs_none_again(workers):
    workers("w1")
    salt = uuid.uuid4().hex[:8]
    source = agentflow.wait(
        agentflow.start("tests.tt_fan_then_step", {"n": 5, "salt": salt}), timeout=60
    )
    assert source.status == Run.Status.SUCCEEDED

    fork = agentflow.wait(agentflow.fork(source, at=1), timeout=60)

    assert fork.status == Run.Status.SUCCEEDED and fork.output == source.output
    children = Step.objects.filter(run=fork, position=0, index__isnull=False).order_by("index")
    assert [c.output for c in children] == [0, 2, 4, 6, 8]
    assert set(children.values_list("status", flat=True)) == {Step.Status.SUCCEEDED}
    assert not Execution.objects.filter(key__startswith=f"{fork.id}:").exists()
    assert [executions(f"{source.id}:0:{i}") for i in range(5)] == [1] * 5
    assert executions(f"tt:{salt}:5") == 2  # position 1 ran again in the fork

    comparison = agentflow.compare(source, fork)
    fan = comparison.steps[0].children
    assert fan.count_a == fan.count_b == 5 and fan.differing == 0
    assert fan.statuses_a == fan.statuses_b == {"succeeded": 5}
    assert comparison.equal


def test_a_fork_at_zero_runs_everything_again(workers):
    workers("w1")
    salt = uuid.uuid4().hex[:8]
    source = agentflow.wait(agentflow.start("tests.tt_steps", {"n": 2, "salt": salt}), timeout=60)
    fork = agentflow.wait(agentflow.fork(source, at=0), timeout=60)
    assert fork.status == Run.Status.SUCCEEDED and fork.output == source.output
    assert [executions(f"tt:{salt}:{i}") for i in range(2)] == [2, 2]


@pytest.mark.django_db
def test_fork_refuses_a_position_the_run_does_not_have(recording_dispatcher):
    run = _finished_fan_out_run(children=3)
    for at in (-1, 3, "1", None, True):
        with pytest.raises(agentflow.InvalidInput, match="from 0 to 2"):
            agentflow.fork(run, at=at)
    assert not Run.objects.filter(parent=run).exists()


@pytest.mark.django_db
def test_fork_refuses_to_keep_a_step_that_has_not_finished(recording_dispatcher):
    run = _finished_fan_out_run(children=3)
    Step.objects.filter(run=run, position=1).update(status=Step.Status.WAITING)
    with pytest.raises(agentflow.InvalidState, match=r"position 1 .* is still waiting"):
        agentflow.fork(run, at=2)
    assert agentflow.fork(run, at=1).parent_id == run.id


@pytest.mark.django_db
def test_forking_a_5000_child_fan_out_takes_as_many_queries_as_forking_3(recording_dispatcher):
    def fork_queries(children: int) -> tuple[Run, list[str]]:
        run = _finished_fan_out_run(children)
        with CaptureQueriesContext(connection) as captured:
            fork = agentflow.fork(run, at=2)
        # Policy rows are re-read for redaction whenever their cache is stale: not per row.
        sqls = [query["sql"] for query in captured.captured_queries]
        return fork, [sql for sql in sqls if "agentflow_policy" not in sql]

    _, small = fork_queries(3)
    fork, large = fork_queries(5000)

    assert len(large) == len(small)
    assert sum(sql.startswith("INSERT INTO agentflow_step") for sql in large) == 1
    assert Step.objects.filter(run=fork).count() == 5002
    copied = Step.objects.get(run=fork, position=0, index=4999)
    assert (copied.output, copied.sealed_args, copied.status) == (4999, "sealed", "succeeded")
    assert recording_dispatcher[-1] == (fork.id, None)


def _finished_fan_out_run(children: int) -> Run:
    """A succeeded run of tests.tt_fan_then_step: a fan-out at 0, a step at 1 (rows only)."""
    run = Run.objects.create(
        agent="tests.tt_fan_then_step",
        agent_version="1",
        status=Run.Status.SUCCEEDED,
        input={"n": children, "salt": "x"},
    )
    rows = [Step(run=run, position=0, kind="map", name="tests.child_effect", status="succeeded")]
    rows += [
        Step(run=run, position=0, index=i, kind="call", name="tests.child_effect",
             status="succeeded", args={"i": i}, output=i, sealed_args="sealed", attempts=1)
        for i in range(children)
    ]  # fmt: skip
    rows.append(Step(run=run, position=1, kind="step", name="tt_count", status="succeeded"))
    Step.objects.bulk_create(rows)
    return run

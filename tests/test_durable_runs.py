"""Durable runs on real worker processes, PostgreSQL and Redis."""

from __future__ import annotations

import pytest
from django.db.models import Count

import agentflow
from agentflow.models import Event, Run, Step
from tests.support import wait_until
from tests.testapp.models import Execution, SideEffect

pytestmark = pytest.mark.django_db(transaction=True)


def finished(run: Run, timeout: float = 60) -> Run:
    return agentflow.wait(run, timeout=timeout)


def test_200_mixed_steps_complete_with_each_side_effect_once(workers):
    workers("w1", concurrency=2)
    workers("w2", concurrency=2)
    run = agentflow.start("tests.mixed", {"n": 200})
    run = finished(run, timeout=120)

    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output == {"squares": sum(i * i for i in range(1, 200, 2)), "effects": 100}
    steps = Step.objects.filter(run=run)
    assert steps.count() == 200
    assert set(steps.values_list("status", flat=True)) == {Step.Status.SUCCEEDED}
    assert sorted(steps.values_list("position", flat=True)) == list(range(200))
    keys = {f"{run.id}:{p}" for p in range(0, 200, 2)}
    assert set(SideEffect.objects.values_list("key", flat=True)) == keys
    # Every body ran exactly once: no step was repeated.
    counts = Execution.objects.values("key").annotate(n=Count("id"))
    assert len(counts) == 200
    assert {row["n"] for row in counts} == {1}


def test_sigkill_during_a_tool_step_resumes_on_another_worker_without_repeats(workers):
    lease = 3.0  # tests.settings LEASE_SECONDS
    doomed = workers("doomed", concurrency=1)
    run = agentflow.start("tests.crashy", {"hold": 120})
    slow_key = f"{run.id}:3"
    wait_until(
        lambda: Execution.objects.filter(key=slow_key).exists(),
        timeout=30,
        what="the slow tool to start on the doomed worker",
    )
    workers("survivor", concurrency=2, beat=True)
    assert Execution.objects.get(key=slow_key).pid != 0

    from django.utils import timezone

    killed_at = timezone.now()
    doomed.kill()
    run = finished(run, timeout=60)

    assert run.status == Run.Status.SUCCEEDED, run.error
    # Measured on what the survivor recorded (when it restarted the killed step), not on
    # how soon this test noticed: resuming is bounded by the lease, not by Celery.
    first, again = Execution.objects.filter(key=slow_key).order_by("id")
    recovered_in = (again.created_at - killed_at).total_seconds()
    assert recovered_in < 3 * lease, f"recovery took {recovered_in:.1f}s"
    assert again.pid != first.pid
    assert run.output["slow"] == "slow:done"
    # The killed step ran twice, but its side effect exists once thanks to its key.
    assert Execution.objects.filter(key=slow_key).count() == 2
    assert SideEffect.objects.filter(key=slow_key).count() == 1
    # No completed step ran again.
    for position in (0, 1, 2, 4, 5, 6):
        assert Execution.objects.filter(key=f"{run.id}:{position}").count() == 1
    assert SideEffect.objects.count() == 7
    slow_step = Step.objects.get(run=run, position=3)
    assert slow_step.attempts == 2


def test_same_advance_message_delivered_twice_concurrently_runs_each_step_once(workers):
    from agentflow.tasks import advance

    workers("w1", concurrency=2)
    workers("w2", concurrency=2)
    run = agentflow.start("tests.mixed", {"n": 40})
    for _ in range(3):
        advance.delay(str(run.id))
    run = finished(run)

    assert run.status == Run.Status.SUCCEEDED, run.error
    counts = Execution.objects.values("key").annotate(n=Count("id"))
    assert len(counts) == 40
    assert {row["n"] for row in counts} == {1}
    assert SideEffect.objects.count() == 20


def test_durable_sleep_survives_a_full_worker_restart(workers):
    first = workers("w1", concurrency=1, beat=True)
    run = agentflow.start("tests.sleeper", {"seconds": 4})
    wait_until(
        lambda: Run.objects.get(id=run.id).status == Run.Status.WAITING,
        timeout=30,
        what="the run to start sleeping",
    )
    wake_at = Step.objects.get(run=run, kind="sleep").wake_at
    assert Run.objects.get(id=run.id).wake_at == wake_at
    first.kill()  # every worker and beat gone; the Celery countdown message is lost with it

    from django.utils import timezone

    wait_until(lambda: timezone.now() > wake_at, timeout=10, what="the wake-up time to pass")
    assert Run.objects.get(id=run.id).status == Run.Status.WAITING
    workers("w2", concurrency=1, beat=True)
    run = finished(run)

    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output["slept"] >= 4
    assert Execution.objects.filter(key=f"{run.id}:1").count() == 1


def test_wait_for_returns_the_signal_data(workers):
    workers("w1", concurrency=1)
    run = agentflow.start("tests.waiter", {})
    wait_until(
        lambda: Step.objects.filter(run=run, kind="wait", status="waiting").exists(),
        timeout=30,
        what="the run to wait for its signal",
    )
    agentflow.signal(run, "go", {"answer": 42})
    run = finished(run)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output == {"got": {"answer": 42}}


def test_signal_sent_before_the_wait_is_kept_until_the_run_gets_there(workers):
    run = agentflow.start("tests.waiter", {})
    agentflow.signal(run, "go", "early")
    workers("w1", concurrency=1)
    assert finished(run).output == {"got": "early"}


def test_wait_for_times_out_durably(workers):
    workers("w1", concurrency=1, beat=True)
    run = agentflow.start("tests.waiter", {"timeout": 1.5})
    run = finished(run)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert "No signal 'go' reached run" in run.output["timed_out"]
    step = Step.objects.get(run=run, kind="wait")
    assert step.status == Step.Status.FAILED
    assert step.error["type"] == "builtins.TimeoutError"


def test_changed_code_between_steps_fails_the_run_with_non_determinism(workers):
    old = workers("old", concurrency=1, env={"AGENTFLOW_TEST_VARIANT": "a"})
    run = agentflow.start("tests.variant", {})
    wait_until(
        lambda: Step.objects.filter(run=run, kind="wait", status="waiting").exists(),
        timeout=30,
        what="the run to reach its wait",
    )
    old.stop()
    workers("new", concurrency=1, env={"AGENTFLOW_TEST_VARIANT": "b"})
    agentflow.signal(run, "continue")
    run = finished(run)

    assert run.status == Run.Status.FAILED
    assert run.error["type"] == "agentflow.exceptions.NonDeterminismError"
    message = run.error["message"]
    assert "position 0" in message
    assert "the history has step 'tests.testapp.agents.step_a'" in message
    assert "the code now asks for call 'tests.record_effect'" in message
    assert not SideEffect.objects.exists()  # the changed branch never ran its tool


def test_tool_retries_backoff_non_retryable_errors_and_timeouts(workers):
    workers("w1", concurrency=1, beat=True)
    run = finished(agentflow.start("tests.retries", {}))
    assert run.status == Run.Status.SUCCEEDED, run.error
    output = run.output
    assert output["flaky"] == 3  # two failures, then success on the third attempt
    assert output["fatal"]["attempts"] == 1
    assert output["fatal"]["type"] == "builtins.ValueError"
    assert "bad data" in output["fatal"]["message"]
    assert output["hang"]["attempts"] == 1
    assert output["hang"]["type"] == "builtins.TimeoutError"
    assert "exceeded its timeout of 0.5s" in output["hang"]["message"]
    flaky = Step.objects.get(run=run, position=0)
    assert (flaky.status, flaky.attempts) == (Step.Status.SUCCEEDED, 3)
    assert Execution.objects.filter(key=f"{run.id}:0").count() == 3
    assert Execution.objects.filter(key=f"{run.id}:1").count() == 1


def test_a_failed_step_is_replayed_as_its_error_and_its_tool_never_runs_again(workers):
    """Every advance after a failed call replays its recorded error; the body never runs again.

    ``tests.fatal`` fails once, not retryably, with 5 retries left; ``tests.flaky`` fails all
    of its 4 attempts. The agent catches both, then waits for two signals: the retries'
    wake-ups and each signal are advances that replay the two failed calls.
    """
    workers("w1", concurrency=2)
    run = agentflow.start("tests.fails_then_waits", {})
    fatal, flaky = f"{run.id}:0", f"{run.id}:1"

    def ran() -> dict[str, int]:
        return {
            "fatal": Execution.objects.filter(key=fatal).count(),
            "flaky": Execution.objects.filter(key=flaky).count(),
        }

    def waits_at(position: int) -> None:
        """Wait until the run parks at ``position`` (or ends: the asserts below say how)."""
        wait_until(
            lambda: (
                Step.objects.filter(run=run, position=position, kind="wait").exists()
                or Run.objects.get(id=run.id).status not in Run.ACTIVE
            ),
            timeout=60,
            what=f"run to wait at position {position}",
        )

    waits_at(2)
    assert ran() == {"fatal": 1, "flaky": 4}, "a failed call's body ran again on replay"
    failed = Step.objects.filter(run=run, position__in=[0, 1]).order_by("position")
    assert list(failed.values_list("status", "attempts")) == [
        (Step.Status.FAILED, 1),
        (Step.Status.FAILED, 4),
    ]

    agentflow.signal(run, "first")
    waits_at(3)
    assert ran() == {"fatal": 1, "flaky": 4}, "a failed call's body ran again on replay"

    agentflow.signal(run, "second")
    run = finished(run)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert ran() == {"fatal": 1, "flaky": 4}, "a failed call's body ran again on replay"
    # What the last advance's replay raised is what the first attempts recorded.
    assert set(run.output) == {"fatal", "flaky"}, f"a failed call replayed as {run.output}"
    assert run.output["fatal"]["attempts"] == 1
    assert run.output["fatal"]["type"] == "builtins.ValueError"
    assert "bad data, retrying will not help" in run.output["fatal"]["message"]
    assert run.output["flaky"]["attempts"] == 4
    assert run.output["flaky"]["type"].endswith("Flaky")
    assert "attempt 4 fails" in run.output["flaky"]["message"]
    # A replay raises the recorded errors again too, without calling either tool.
    report = agentflow.replay(run)
    assert report.ok, str(report)
    assert report.steps_replayed == 4
    assert ran() == {"fatal": 1, "flaky": 4}


def test_invalid_tool_arguments_raise_inside_the_agent_and_the_tool_never_runs(workers):
    workers("w1", concurrency=1)
    run = finished(agentflow.start("tests.bad_args", {}))
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert "Tool 'tests.typed' got invalid arguments" in run.output["error"]
    assert "count: Input should be a valid integer" in run.output["error"]
    assert run.output["after"] == "okx2"
    assert Execution.objects.filter(key="typed").count() == 1  # only the valid call ran
    bad = Step.objects.get(run=run, position=0)
    assert bad.status == Step.Status.FAILED
    assert bad.error["type"] == "agentflow.exceptions.ToolArgumentError"


@pytest.mark.parametrize(
    ("agent", "running"),
    [("tests.claims_cancellable", [":0"]), ("tests.claims_cancellable_fan", [":0:0", ":0:1"])],
    ids=["inline call", "fan-out children"],
)
def test_cancel_stops_a_running_run_between_steps(workers, agent, running):
    worker = workers("w1", concurrency=2)
    run = agentflow.start(agent, {})
    keys = [f"{run.id}{suffix}" for suffix in running]
    wait_until(
        lambda: Execution.objects.filter(key__in=keys).count() == len(keys),
        timeout=30,
        what="the tool calls to start",
    )
    agentflow.cancel(run)
    # The worker tells each running call to stop (its heartbeat finds the lease or claim
    # gone); nothing else would end these calls for another minute.
    wait_until(
        lambda: (
            Execution.objects.filter(key__in=[f"{key}:stopped" for key in keys]).count()
            == len(keys)
        ),
        timeout=30,
        what="the running tool calls to be told to stop",
    )
    # Then the worker drops what they returned and advances nothing further.
    task, outcome = (
        ("agentflow.advance", "'lease-lost'")
        if len(keys) == 1
        else ("agentflow.run_tool", "succeeded")
    )
    wait_until(
        lambda: (
            sum(
                f"Task {task}[" in line and "succeeded in" in line and outcome in line
                for line in worker.log().splitlines()
            )
            >= len(keys)
        ),
        timeout=30,
        what="the worker to finish the stopped calls",
    )
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED
    calls = Step.objects.filter(run=run, idempotency_key__in=keys)
    # What the stopped calls returned was not recorded over the cancellation.
    assert [(step.status, (step.error or {}).get("type")) for step in calls] == [
        ("failed", "cancelled")
    ] * len(keys)
    assert not Execution.objects.filter(key__contains="never told").exists()
    assert not SideEffect.objects.exists()  # nothing after the cancelled step started
    assert not Step.objects.filter(run=run, position__gt=0).exists()
    assert not Event.objects.filter(run=run, type="step.completed").exists()


def test_cancel_a_waiting_run(workers):
    workers("w1", concurrency=1)
    run = agentflow.start("tests.waiter", {})
    wait_until(
        lambda: Run.objects.get(id=run.id).status == Run.Status.WAITING,
        timeout=30,
        what="the run to wait",
    )
    run = agentflow.cancel(run)
    assert run.status == Run.Status.CANCELLED
    assert Step.objects.get(run=run, kind="wait").status == Step.Status.FAILED
    with pytest.raises(agentflow.InvalidState, match="already cancelled"):
        agentflow.cancel(run)
    with pytest.raises(agentflow.InvalidState, match="signals can only reach"):
        agentflow.signal(run, "go")

"""Claims the README makes, each checked on real workers, PostgreSQL and Redis.

Every test counts what workers did (executions, side effects, overlapping calls, messages
sent), so a runtime without the claimed behaviour fails it.
"""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db.models import Count
from django.utils import timezone

import agentflow
from agentflow.models import Budget, BudgetSpend, Policy, Run, Step
from tests.support import wait_until
from tests.testapp.models import Call, Execution, Flag, SideEffect

pytestmark = pytest.mark.django_db(transaction=True)


def runs_of(run: Run) -> dict[str, int]:
    """How often each body of ``run`` ran, by key."""
    rows = Execution.objects.filter(key__startswith=str(run.id)).values("key")
    return {row["key"]: row["n"] for row in rows.annotate(n=Count("id"))}


# -- leases and heartbeats ------------------------------------------------------------------


def test_a_step_longer_than_the_lease_runs_once_on_a_healthy_worker(workers, settings):
    lease = settings.AGENTFLOW["LEASE_SECONDS"]
    # The reconciler runs every second (beat, plus whatever the workers run themselves):
    # it would hand out any lease or claim that the heartbeat failed to renew.
    workers("w1", concurrency=4, beat=True)
    hold = 2.5 * lease
    run = agentflow.start("tests.claims_long_steps", {"hold": hold, "children": 2})
    run = agentflow.wait(run, timeout=120)

    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output == {"inline": "held", "mapped": ["held", "held"]}
    keys = [f"{run.id}:0", f"{run.id}:1:0", f"{run.id}:1:1"]
    assert runs_of(run) == dict.fromkeys(keys, 1)  # the inline call and each child ran once
    assert SideEffect.objects.count() == 3
    # No attempt was handed out again: the heartbeat kept the lease and the claims alive.
    attempts = Step.objects.filter(idempotency_key__in=keys).values_list("attempts", flat=True)
    assert sorted(attempts) == [1, 1, 1]


def test_a_warm_shutdown_in_the_middle_of_a_step_repeats_nothing(workers, settings):
    lease = settings.AGENTFLOW["LEASE_SECONDS"]
    old = workers("old", concurrency=1)
    run = agentflow.start("tests.claims_deploy", {"hold": 1.5 * lease})
    slow_key = f"{run.id}:1"
    wait_until(
        lambda: Execution.objects.filter(key=slow_key).exists(),
        timeout=30,
        what="the slow step to start on the old worker",
    )
    old.stop()  # SIGTERM, as a deploy does: the running step finishes first
    assert old.process.returncode == 0, old.log()[-3000:]
    assert "warm shutdown" in old.log().lower()
    assert Step.objects.get(run=run, position=1).status == Step.Status.SUCCEEDED
    assert Run.objects.get(id=run.id).status in Run.ACTIVE  # the rest waits for a worker

    workers("new", concurrency=1)
    run = agentflow.wait(run, timeout=60)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output == ["first:done", "held", "last:done"]
    assert runs_of(run) == {f"{run.id}:0": 1, slow_key: 1, f"{run.id}:3": 1}
    assert SideEffect.objects.count() == 3
    assert Step.objects.get(run=run, position=1).attempts == 1


# -- rate limits and concurrency ------------------------------------------------------------


def test_a_booked_call_that_starts_late_books_again(workers):
    # 2/s: slots (1 s + guard) / 2 apart. The second call books a slot and parks; no
    # worker is there when it is due, so it comes back late and must book anew, or the
    # third call would start right after it.
    first = workers("w1", concurrency=1)
    run = agentflow.start("tests.claims_rated_calls", {"n": 3})
    booked = wait_until(
        lambda: (
            Step.objects.filter(run=run, position=1, status="scheduled")
            .exclude(rate_slot=None)
            .first()
        ),
        timeout=30,
        what="the second call to book a slot and park",
    )
    first.stop()
    wait_until(
        lambda: (timezone.now() - booked.rate_slot).total_seconds() > 1.5,
        timeout=10,
        what="the booked slot to be well past",
    )
    workers("w2", concurrency=1)
    run = agentflow.wait(run, timeout=60)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output == [0, 1, 2]

    starts = dict(Call.objects.filter(tool="tests.claims_rated").values_list("key", "started"))
    late, after = starts[f"{run.id}:1"], starts[f"{run.id}:2"]
    assert late - booked.rate_slot.timestamp() > 1  # it did start late
    spacing = (1 + 0.02) / 2  # (period + RATE_LIMIT_GUARD_SECONDS) / N
    # Had the late call kept its stale slot, the next one would have found the bucket free.
    assert after - late >= spacing / 2, f"the next call started {after - late:.3f}s later"


def gated_runs(children: int, scopes: list[dict]) -> list[Run]:
    """Start one tests.claims_gated fan-out per scope; their calls hold until a flag."""
    return [
        agentflow.start(
            scope.get("agent", "tests.claims_gated_fan"),
            {"n": children, "flag": "go"},
            owner=scope.get("owner"),
        )
        for scope in scopes
    ]


def calls_of(run: Run) -> int:
    return Call.objects.filter(tool="tests.claims_gated", key__startswith=str(run.id)).count()


def parked(run: Run) -> int:
    """Children refused a slot and handed back for later (status scheduled)."""
    return Step.objects.filter(run=run, index__isnull=False, status="scheduled").count()


def finish_gated(runs: list[Run], children: int) -> None:
    Flag.objects.create(name="go")
    for run in runs:
        run = agentflow.wait(run, timeout=60)
        assert run.status == Run.Status.SUCCEEDED, run.error
        assert run.output == ["go"] * children
    assert Call.objects.count() == children * len(runs)  # each call once


@pytest.mark.parametrize("per", ["owner", "agent"])
def test_per_owner_and_per_agent_limits_count_separately(workers, per):
    Policy.objects.create(
        name="one at a time each",
        tool="tests.claims_gated",
        max_concurrency=1,
        per_owner=per == "owner",
        per_agent=per == "agent",
    )
    user = get_user_model()
    if per == "owner":
        scopes = [{"owner": user.objects.create_user(name)} for name in ("ann", "bob")]
    else:
        scopes = [
            {"agent": name} for name in ("tests.claims_gated_fan", "tests.claims_gated_fan_b")
        ]
    workers("w1", concurrency=4)
    runs = gated_runs(2, scopes)
    # Each owner (agent) has its own single slot: one call of each runs while the others
    # of the same owner (agent) are refused and parked. A shared counter would let only
    # one call in all, and no counter at all would let all four run.
    wait_until(
        lambda: all(calls_of(run) == 1 and parked(run) == 1 for run in runs),
        timeout=30,
        what=f"one call per {per} to hold its slot and the other to wait",
    )
    finish_gated(runs, 2)
    for run in runs:
        intervals = Call.objects.filter(key__startswith=str(run.id)).values_list("started", "ended")
        (_, first_end), (second_start, _) = sorted(intervals)
        assert first_end <= second_start  # never two at once within one owner (agent)


def test_the_most_specific_enabled_policy_wins(workers):
    owner = get_user_model().objects.create_user("ann")
    Policy.objects.create(name="all claims tools", tool="tests.claims_*", max_concurrency=4)
    Policy.objects.create(
        name="this tool for this agent",
        tool="tests.claims_gated",
        agent="tests.claims_gated_fan",
        max_concurrency=1,
    )
    Policy.objects.create(
        name="for ann, but disabled",
        enabled=False,
        tool="tests.claims_gated",
        agent="tests.claims_gated_fan",
        owner=owner,
        max_concurrency=3,
    )
    workers("w1", concurrency=6)
    runs = gated_runs(4, [{"owner": owner}])
    (run,) = runs
    # The agent rule (cap 1) beats the glob (cap 4); the owner rule would beat it (cap 3)
    # but is disabled. So one call runs and the three others are refused and parked.
    wait_until(
        lambda: calls_of(run) == 1 and parked(run) == 3,
        timeout=30,
        what="one call to hold the only slot and three to wait",
    )
    finish_gated(runs, 4)


# -- budgets ---------------------------------------------------------------------------------


def test_one_budget_shared_by_concurrent_runs_is_never_overspent(workers):
    budget = Budget.objects.create(
        name="metered, all runs", agent="tests.metered_fan", period="total", max_cost="1.00"
    )
    workers("w1", concurrency=4)
    workers("w2", concurrency=4)
    runs = [agentflow.start("tests.metered_fan", {"n": 15}) for _ in range(3)]
    runs = [agentflow.wait(run, timeout=120) for run in runs]  # 45 calls, room for 20
    assert {run.status for run in runs} <= {Run.Status.PAUSED, Run.Status.SUCCEEDED}
    assert Run.Status.PAUSED in {run.status for run in runs}
    wait_until(
        lambda: not Step.objects.filter(status=Step.Status.RUNNING).exists(),
        timeout=60,
        what="the calls admitted before the pauses to finish",
    )
    executed = SideEffect.objects.count()
    spend = BudgetSpend.objects.get(budget=budget)
    assert 0 < executed <= 20, executed
    assert spend.cost == Decimal("0.05") * executed <= Decimal("1.00")
    assert spend.tool_calls == executed


# -- fan-out messages ------------------------------------------------------------------------


def test_five_thousand_children_never_make_one_giant_message(redis_client):
    """Count and measure every message a 5,000-child fan-out sends (in this process)."""
    from celery.signals import before_task_publish
    from kombu.utils.json import dumps

    from agentflow import conf, tasks
    from agentflow._engine import executor

    sent: list[tuple[str, tuple, int]] = []

    def record(sender=None, body=None, headers=None, **kwargs):
        sent.append((sender, body[0], len(dumps(body)) + len(dumps(headers or {}))))

    before_task_publish.connect(record)
    try:
        run = agentflow.start("tests.fan", {"n": 5000})
        sent.clear()  # the start's own wake-up
        assert executor.advance(run.id, worker="test") == "waiting"  # records the fan-out
        chunks = [args for name, args, _ in sent if name == "agentflow.fan_out_chunk"]
        for args in chunks:  # what a worker does with each chunk message
            tasks.fan_out_chunk(*args)
    finally:
        before_task_publish.disconnect(record)

    fan_out_tasks, chord_size = conf.setting("FAN_OUT_TASKS"), conf.setting("CHORD_SIZE")
    header = [
        args for name, args, _ in sent if name in ("agentflow.run_tool", "agentflow.run_tools")
    ]
    assert len(chunks) == math.ceil(len(header) / chord_size)
    assert len(header) <= fan_out_tasks
    per_task = math.ceil(5000 / len(header))  # children share tasks evenly
    assert {len(args[0]) for args in header[:-1]} == {per_task}
    assert len(sent) == len(chunks) + len(header)  # nothing else (the join comes at the end)
    # Every child is in exactly one header task.
    ids = [i for args in header for i in (args[0] if isinstance(args[0], list) else [args[0]])]
    assert sorted(ids) == sorted(
        Step.objects.filter(run=run, index__isnull=False).values_list("id", flat=True)
    )
    largest = max(size for _, _, size in sent)
    assert largest < 64 * 1024, f"a message of {largest} bytes"
    print(f"5,000 children: {len(sent)} messages, the largest {largest} bytes")
    # And what reached the broker is that many messages, none of them large.
    queued = [
        item
        for key in redis_client.keys("*")
        if redis_client.type(key) == b"list"
        for item in redis_client.lrange(key, 0, -1)
    ]
    assert len(queued) >= len(sent)
    assert max(len(item) for item in queued) < 64 * 1024

"""Budgets: reserved before a step, settled after; exhaustion pauses; resume continues."""

from __future__ import annotations

from decimal import Decimal

import pytest

import agentflow
from agentflow._engine import child_runner
from agentflow._guardrails import budgets
from agentflow.models import Budget, BudgetSpend, Event, Run, Step
from tests.support import all_at_once, assert_form_refuses, wait_until
from tests.testapp.models import Execution, SideEffect

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_hundred_parallel_calls_never_overspend_and_the_run_pauses_then_resumes(workers):
    workers("w1", concurrency=4)
    workers("w2", concurrency=4)
    run = agentflow.start("tests.metered_fan", {"n": 100}, budget={"max_cost": "1.00"})
    run = agentflow.wait(run, timeout=120)
    assert run.status == Run.Status.PAUSED, run.error
    assert "Budget 'run " in run.wait_reason and "spent $1.00" in run.wait_reason
    assert "of $1.00" in run.wait_reason and "needs $0.05" in run.wait_reason
    wait_until(
        lambda: not Step.objects.filter(run=run, status=Step.Status.RUNNING).exists(),
        timeout=60,
        what="the children admitted before the pause to finish",
    )
    budget = Budget.objects.get(run=run)
    spend = BudgetSpend.objects.get(budget=budget)
    executed = SideEffect.objects.count()
    assert executed <= 20 and spend.cost <= Decimal("1.00")
    assert spend.cost == Decimal("0.05") * executed  # every reservation settled or released
    assert Event.objects.filter(run=run, type="run.paused").exists()

    budget.max_cost = Decimal("10.00")
    budget.save()
    agentflow.resume(run)
    run = agentflow.wait(run, timeout=120)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output == 100
    assert SideEffect.objects.count() == 100
    assert Execution.objects.count() == 100  # no call executed twice
    assert BudgetSpend.objects.get(budget=budget).cost == Decimal("5.00")
    assert BudgetSpend.objects.get(budget=budget).tool_calls == 100


def test_concurrent_reservations_admit_exactly_what_fits():
    budget = Budget.objects.create(name="day", period="day", max_cost=Decimal("1.00"))
    run = Run.objects.create(agent="tests.metered_fan", agent_version="1")
    usage = budgets.Usage(cost=Decimal("0.05"), tool_calls=1)

    def reserve() -> bool:
        try:
            budgets.reserve([budget], run.id, usage, "a call")
        except agentflow.BudgetExceeded:
            return False
        return True

    admitted = all_at_once(reserve, threads=30)
    assert admitted.count(True) == 20
    spend = BudgetSpend.objects.get(budget=budget)
    assert spend.cost == Decimal("1.00") and spend.window.startswith("day:")


@pytest.mark.parametrize(
    ("limit", "fit"),
    [
        ("1.00", 3),  # a 4th call would spend $1.20, though $0.90 < $1.00 when it asks
        ("0.90", 3),  # the 3rd call ends exactly on the limit: spend + estimate == limit fits
        ("0.89", 2),  # the 3rd would end $0.01 over
    ],
)
def test_concurrent_reservations_that_do_not_divide_the_limit_never_overspend(limit, fit):
    """Costs that do not divide the limit: admission asks ``spend + estimate <= limit``."""
    budget = Budget.objects.create(name="odd", period="total", max_cost=Decimal(limit))
    run = Run.objects.create(agent="tests.metered_fan", agent_version="1")
    usage = budgets.Usage(cost=Decimal("0.30"), tool_calls=1)

    def reserve() -> bool:
        try:
            budgets.reserve([budget], run.id, usage, "a call")
        except agentflow.BudgetExceeded:
            return False
        return True

    admitted = all_at_once(reserve, threads=12)
    spend = BudgetSpend.objects.get(budget=budget)
    assert spend.cost <= Decimal(limit), f"spent ${spend.cost} of a ${limit} limit"
    assert admitted.count(True) == fit, (
        f"{admitted.count(True)} calls of $0.30 admitted under a ${limit} limit, {fit} fit"
    )
    assert (spend.cost, spend.tool_calls) == (Decimal("0.30") * fit, fit)


def test_a_fan_out_whose_call_cost_does_not_divide_the_limit_runs_exactly_the_calls_that_fit(
    workers,
):
    """$0.05 calls under $0.27: 5 fit ($0.25); a 6th would end at $0.30, though $0.25 < $0.27.

    Then the operator raises the limit to $0.30, where the 6th call ends exactly on it: it
    runs, and the 7th pauses the run again.
    """
    workers("w1", concurrency=2)
    workers("w2", concurrency=2)
    run = agentflow.start("tests.metered_fan", {"n": 12}, budget={"max_cost": "0.27"})
    budget = Budget.objects.get(run=run)
    paused_with_only_what_fits(run, budget, limit="0.27", fit=5)

    budget.max_cost = Decimal("0.30")
    budget.save()
    agentflow.resume(run)
    paused_with_only_what_fits(run, budget, limit="0.30", fit=6)


def paused_with_only_what_fits(run: Run, budget: Budget, *, limit: str, fit: int) -> None:
    """The run paused on its budget after exactly ``fit`` calls of $0.05 ran, none twice."""
    run = agentflow.wait(run, timeout=60)
    assert run.status == Run.Status.PAUSED, (run.status, run.error)
    wait_until(
        lambda: not Step.objects.filter(run=run, status=Step.Status.RUNNING).exists(),
        timeout=60,
        what="the children admitted before the pause to finish",
    )
    spend = BudgetSpend.objects.get(budget=budget)
    ran = SideEffect.objects.count()
    assert spend.cost <= Decimal(limit), f"spent ${spend.cost} of a ${limit} limit"
    assert ran == fit, f"{ran} calls of $0.05 ran under a ${limit} limit; {fit} fit"
    assert Execution.objects.count() == fit  # and none ran twice
    assert spend.cost == Decimal("0.05") * fit
    assert f"spent ${spend.cost} of ${limit}" in run.wait_reason, run.wait_reason
    assert "needs $0.05" in run.wait_reason, run.wait_reason


def test_settling_replaces_the_estimate_with_the_actual_usage(settings):
    settings.AGENTFLOW = {**settings.AGENTFLOW, "PRICES": {"m": {"input": "2", "output": "8"}}}
    assert budgets.price("m", 1_000_000, 500_000) == Decimal("6")
    assert budgets.price("unknown", 10, 10) == 0
    budget = Budget.objects.create(name="tokens", period="total", max_output_tokens=1000)
    run = Run.objects.create(agent="a", agent_version="1")
    held = budgets.reserve([budget], run.id, budgets.Usage(output_tokens=800), "a model call")
    with pytest.raises(agentflow.BudgetExceeded, match="output tokens spent 800 of 1000"):
        budgets.reserve([budget], run.id, budgets.Usage(output_tokens=300), "another call")
    budgets.settle(held, budgets.Usage(output_tokens=120, input_tokens=40))
    spend = BudgetSpend.objects.get(budget=budget, window="total")
    assert (spend.output_tokens, spend.input_tokens) == (120, 40)
    budgets.reserve([budget], run.id, budgets.Usage(output_tokens=300), "another call")


def test_a_start_budget_with_bad_limits_is_refused_and_nothing_is_written():
    with pytest.raises(agentflow.InvalidInput, match="max_cost"):
        agentflow.start("tests.metered_fan", {"n": 1}, budget={"max_cost": "-1"})
    with pytest.raises(agentflow.InvalidInput, match="unknown limit"):
        agentflow.start("tests.metered_fan", {"n": 1}, budget={"dollars": 3})
    assert not Run.objects.exists() and not Budget.objects.exists()


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"max_cost": "-0.01"}, "max_cost", ""),
        ({"max_tool_calls": "-3"}, "max_tool_calls", ""),
        ({"max_cost": "1", "agent": "bad agent!"}, "agent", "may only use"),
        ({}, "max_cost", "limits nothing"),
    ],
)
def test_budget_form_rejects_bad_values_with_field_errors(admin_client, fields, field, message):
    data = {"name": "b", "enabled": "on", "period": "run", "agent": "", **fields}
    data.update({f"spends-{k}": v for k, v in {"TOTAL_FORMS": 0, "INITIAL_FORMS": 0}.items()})
    assert_form_refuses(admin_client, "/admin/agentflow/budget/add/", data, field, message)
    assert not Budget.objects.exists()


def own_budgets(run: Run) -> list[Budget]:
    return budgets.for_run(run.id, run.agent, None)


def _stale_refusal(run: Run) -> tuple[child_runner.Claimed, Step]:
    """A child claimed and refused before an operator raised the limit and resumed."""
    step = Step.objects.create(
        run=run,
        position=0,
        index=7,
        kind="tool",
        name="tests.metered",
        args={"i": 7},
        args_hash="h",
        status=Step.Status.RUNNING,
        attempts=1,
        idempotency_key=f"{run.id}:0:7",
    )
    claimed = child_runner.Claimed(
        step.id, run.id, 0, 7, "tests.metered", {"i": 7}, step.idempotency_key, 1, None,
        run.agent, None, True,
    )  # fmt: skip
    return claimed, step


def test_a_refusal_read_before_a_resume_does_not_pause_the_run_again():
    run = agentflow.start("tests.metered_fan", {"n": 1}, budget={"max_cost": "10.00"})
    Run.objects.filter(id=run.id).update(status=Run.Status.WAITING)  # resumed meanwhile
    claimed, step = _stale_refusal(run)
    usage = budgets.Usage(cost=Decimal("0.05"), tool_calls=1)
    reservation = child_runner._reserve_or_hold(
        claimed, own_budgets(run), usage, "tool tests.metered"
    )
    assert reservation is not None and reservation.spend_ids  # the raised limit admits it
    run.refresh_from_db()
    assert run.status == Run.Status.WAITING and not run.wait_reason
    step.refresh_from_db()
    assert step.status == Step.Status.RUNNING  # still claimed: the call goes ahead


def test_a_child_refused_while_its_run_is_paused_is_handed_back_for_resume():
    run = agentflow.start("tests.metered_fan", {"n": 1}, budget={"max_cost": "10.00"})
    Run.objects.filter(id=run.id).update(status=Run.Status.PAUSED, wait_reason="by a sibling")
    claimed, step = _stale_refusal(run)
    usage = budgets.Usage(cost=Decimal("0.05"), tool_calls=1)
    assert (
        child_runner._reserve_or_hold(claimed, own_budgets(run), usage, "tool tests.metered")
        is None
    )
    run.refresh_from_db()
    assert (run.status, run.wait_reason) == (Run.Status.PAUSED, "by a sibling")
    step.refresh_from_db()
    assert (step.status, step.attempts) == (Step.Status.PENDING, 0)
    assert not BudgetSpend.objects.filter(tool_calls__gt=0).exists()  # nothing held


def test_a_call_paused_by_its_budget_counts_its_step_once(recording_dispatcher, monkeypatch):
    from agentflow._engine import executor
    from tests.testapp import agents as test_agents

    def two_calls(ctx, n):
        return [ctx.call(test_agents.metered, i=i) for i in range(2)]

    monkeypatch.setattr(test_agents.metered_fan, "fn", two_calls)
    run = agentflow.start(
        "tests.metered_fan", {"n": 2}, budget={"max_cost": "0.05", "max_steps": 10}
    )
    assert executor.advance(run.id, worker="t") == "paused"
    spend = BudgetSpend.objects.get(budget__run=run)
    assert (spend.steps, spend.tool_calls, spend.cost) == (1, 1, Decimal("0.05"))
    Budget.objects.filter(run=run).update(max_cost=Decimal("1.00"))
    agentflow.resume(run)
    assert executor.advance(run.id, worker="t") == "succeeded"
    spend.refresh_from_db()
    assert (spend.steps, spend.tool_calls, spend.cost) == (2, 2, Decimal("0.10"))
    assert SideEffect.objects.count() == 2


def test_a_database_failure_reading_budgets_leaves_the_run_to_be_retried(
    recording_dispatcher, monkeypatch
):
    """The gate lets the error out; the engine makes it a retry, never the run's failure."""
    from django.db import OperationalError

    from agentflow._engine import executor

    run = agentflow.start("tests.mixed", {"n": 1}, budget={"max_steps": 10})

    def unreachable(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(Budget.objects, "filter", unreachable)
    assert executor.advance(run.id, worker="test") == "store-unavailable"
    run.refresh_from_db()
    assert run.status == Run.Status.RUNNING and run.error is None
    assert not Step.objects.filter(run=run).exists()


def test_a_budget_added_to_a_running_run_marks_it_so_its_budget_is_read(recording_dispatcher):
    run = agentflow.start("tests.metered_fan", {"n": 1})
    assert not Run.objects.get(id=run.id).has_own_budget  # no budget query for this run
    Budget.objects.create(name="added later", run=run, max_tool_calls=5)
    assert Run.objects.get(id=run.id).has_own_budget
    with_own = agentflow.start("tests.metered_fan", {"n": 1}, budget={"max_cost": "1"})
    assert Run.objects.get(id=with_own.id).has_own_budget

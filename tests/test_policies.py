"""Policies: allow/deny rules (deny wins), deny-by-default, the loop guard, form errors."""

from __future__ import annotations

from datetime import timedelta

import pytest

import agentflow
from agentflow._engine import executor
from agentflow.models import Policy, Run, Step, conditions
from tests.support import assert_form_refuses, wait_until
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_denied_tool_makes_zero_calls_and_raises_policy_denied(workers):
    Policy.objects.create(name="allow all", tool="*", effect="allow")
    Policy.objects.create(name="no forbidden", tool="tests.forb*", effect="deny")
    workers("w1")
    run = agentflow.wait(agentflow.start("tests.forbidden_agent", {}), timeout=60)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output["call"].startswith("PolicyDenied: Policy 'no forbidden' denies tool")
    assert all("Policy 'no forbidden' denies" in child for child in run.output["map"])
    assert not Execution.objects.filter(key="forbidden").exists()
    assert agentflow.replay(run).ok


def test_deny_by_default_needs_an_allow_rule(recording_dispatcher, settings):
    from agentflow._engine import child_runner
    from tests.support import RecordingDispatcher

    settings.AGENTFLOW = {**settings.AGENTFLOW, "DENY_BY_DEFAULT": True}
    run = agentflow.start("tests.forbidden_agent", {})
    assert executor.advance(run.id, worker="t") == "succeeded"  # every call refused up front
    run.refresh_from_db()
    assert "DENY_BY_DEFAULT" in run.output["call"]
    assert all("DENY_BY_DEFAULT" in child for child in run.output["map"])
    assert not Execution.objects.exists()

    # An allow rule lets its tool run, inline and as fan-out children (run here in-process).
    Policy.objects.create(name="only forbidden", tool="tests.forbidden", effect="allow")
    run = agentflow.start("tests.forbidden_agent", {})
    assert executor.advance(run.id, worker="t") == "waiting"  # the inline call ran; a map waits
    assert Execution.objects.filter(key="forbidden").count() == 1
    step_ids = [step_id for step_id, _ in RecordingDispatcher.children]
    assert len(step_ids) == 2  # both children were sent, none refused
    assert [child_runner.run_child(step_id) for step_id in step_ids] == ["succeeded"] * 2
    assert executor.advance(run.id, worker="t") == "succeeded"
    run.refresh_from_db()
    assert run.output == {"call": "ran", "map": ["ran", "ran"]}
    assert Execution.objects.filter(key="forbidden").count() == 3

    # Every other tool is still refused.
    run = agentflow.start("tests.payer", {"invoice": "x", "amount": 1})
    executor.advance(run.id, worker="t")
    run.refresh_from_db()
    assert "DENY_BY_DEFAULT" in run.output["refused"]
    assert not Execution.objects.filter(key__startswith="pay:").exists()


def test_the_loop_guard_pauses_a_runaway_agent_and_resume_obeys_the_new_limit(workers):
    guard = Policy.objects.create(name="guard", agent="tests.runaway", max_steps=5)
    workers("w1")
    run = agentflow.wait(agentflow.start("tests.runaway", {}), timeout=60)
    assert run.status == Run.Status.PAUSED
    assert "allows at most 5 steps per run (loop guard)" in run.wait_reason
    assert Step.objects.filter(run=run).count() == 5
    guard.max_steps = 8
    guard.save()
    agentflow.resume(run)
    wait_until(
        lambda: (
            Step.objects.filter(run=run).count() == 8
            and Run.objects.get(id=run.id).status == Run.Status.PAUSED
        ),
        timeout=60,
        what="the run to pause again at the raised limit",
    )
    with pytest.raises(agentflow.InvalidState, match="only a paused run"):
        agentflow.resume(agentflow.cancel(run))


def test_a_run_past_its_max_duration_pauses_before_its_next_step(recording_dispatcher):
    Policy.objects.create(name="short", max_duration=timedelta(seconds=1))
    run = agentflow.start("tests.runaway", {})
    Run.objects.filter(id=run.id).update(started_at=run.created_at - timedelta(hours=1))
    assert executor.advance(run.id, worker="t") == "paused"
    run.refresh_from_db()
    assert "allows runs of 0:00:01 at most" in run.wait_reason
    assert not Step.objects.filter(run=run).exists()


@pytest.mark.parametrize(
    ("text", "args", "expected"),
    [
        ("amount > 1000", {"amount": "1500.00"}, True),
        ("amount > 1000", {"amount": 999}, False),
        ("currency == 'EUR' and amount >= 50", {"currency": "EUR", "amount": 50}, True),
        ("not (country in ['FR', 'DE'])", {"country": "FR"}, False),
        ("invoice.total > 10 or items[0] == 'x'", {"invoice": {"total": 5}, "items": ["x"]}, True),
        ("currency == 'EUR'", {"currency": 5}, False),
        # Undecidable: None, which the gate treats as the safe side.
        ("amount > 1000", {}, None),
        ("amount > 'abc'", {"amount": 5}, None),
        ("amount > 1000", {"amount": "Infinity"}, None),
        ("amount > 1000", {"amount": "NaN"}, None),
        ("amount > 1000", {"amount": "sNaN"}, None),
        ("amount > 1000", {"amount": "-Infinity"}, None),
        ("amount > 1000", {"amount": float("inf")}, None),
        ("amount == 5", {"amount": "NaN"}, None),
        ("not (amount > 1000)", {"amount": "NaN"}, None),
        ("amount > 1000 or flag", {"amount": "NaN", "flag": True}, True),
        ("amount > 1000 and flag", {"amount": "NaN", "flag": False}, False),
        ("amount > 1000 and flag", {"amount": "NaN", "flag": True}, None),
    ],
)
def test_conditions_are_evaluated_without_eval(text, args, expected):
    assert conditions.evaluate(text, args) is expected


def policy_gate(tool_name: str, args: dict, *, requires_approval: bool = False):
    from types import SimpleNamespace

    from agentflow._guardrails import policy

    policy.clear_cache()
    tool = SimpleNamespace(name=tool_name, requires_approval=requires_approval)
    return policy.check_tool(tool, "tests.agent", None, args, "position 0")


@pytest.mark.parametrize("amount", ["Infinity", "NaN", "sNaN", "-Infinity", "1e999999999999"])
def test_a_condition_that_cannot_be_evaluated_fails_closed(amount, settings):
    """The red-team probe's "Infinity" passed `amount > 1000` (approve) and
    `amount > 100000` (deny) rules, and the tool got Decimal('Infinity')."""
    Policy.objects.create(
        name="big", tool="tests.transfer", effect="approve", condition="amount > 1000"
    )
    Policy.objects.create(
        name="huge", tool="tests.wire", effect="deny", condition="amount > 100000"
    )
    Policy.objects.create(
        name="small ok", tool="tests.send", effect="allow", condition="amount < 10"
    )
    big = amount == "1e999999999999"  # a finite number: it is simply compared
    approval = policy_gate("tests.transfer", {"amount": amount}).approval
    assert approval is not None
    assert ("cannot be evaluated" in approval) is not big
    denied = policy_gate("tests.wire", {"amount": amount}).denied
    assert denied is not None and "Policy 'huge' denies" in denied
    # Under deny-by-default, an allow rule that cannot decide allows nothing.
    settings.AGENTFLOW = {**settings.AGENTFLOW, "DENY_BY_DEFAULT": True}
    assert "DENY_BY_DEFAULT" in policy_gate("tests.send", {"amount": amount}).denied
    # A missing argument cannot be compared either.
    assert "cannot be evaluated" in policy_gate("tests.wire", {}).denied


def test_deny_by_default_counts_an_allow_rule_only_when_its_condition_holds(settings):
    settings.AGENTFLOW = {**settings.AGENTFLOW, "DENY_BY_DEFAULT": True}
    Policy.objects.create(
        name="small ok", tool="tests.send", effect="allow", condition="amount < 10"
    )
    assert policy_gate("tests.send", {"amount": 5}).denied is None
    refused = policy_gate("tests.send", {"amount": 50}).denied
    assert refused is not None and "no enabled Policy allows it" in refused
    assert policy_gate("tests.other", {"amount": 5}).denied is not None


def test_an_approval_rule_whose_condition_is_false_asks_nobody():
    Policy.objects.create(
        name="big", tool="tests.transfer", effect="approve", condition="amount > 1000"
    )
    assert policy_gate("tests.transfer", {"amount": "999.99"}) == policy_gate("tests.x", {})
    assert policy_gate("tests.transfer", {"amount": "1000.01"}).approval is not None


def test_an_infinite_amount_waits_for_a_person_and_never_reaches_the_tool(recording_dispatcher):
    """End to end: the call is held for a person; the tool does not run."""
    Policy.objects.create(
        name="big transfers", tool="tests.transfer", effect="approve", condition="amount > 1000"
    )
    run = agentflow.start("tests.transferrer", {"amounts": ["Infinity"]})
    assert executor.advance(run.id, worker="t") == "waiting"
    from agentflow._engine import child_runner
    from tests.support import RecordingDispatcher

    for step_id, _ in RecordingDispatcher.children:
        child_runner.run_child(step_id)
    approval = wait_until(lambda: run.approvals.first(), timeout=10, what="the transfer's approval")
    assert approval.request["args"] == {"amount": "Infinity"}
    assert "cannot be evaluated" in approval.request["reason"]
    assert not Execution.objects.filter(key__startswith="transfer:").exists()


@pytest.mark.parametrize(
    "text",
    ["__import__('os')", "amount.__class__", "f(1)", "amount + 1 > 2", "[x for x in y]", "a >"],
)
def test_unsafe_or_broken_conditions_are_refused(text):
    with pytest.raises(conditions.ConditionError):
        conditions.validate(text)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"tool": "bad tool!", "effect": "deny"}, "tool", "may only use"),
        ({"agent": "x[", "effect": "deny"}, "agent", "unclosed"),
        ({"effect": "approve", "condition": "open('x')"}, "condition", "not allowed"),
        ({"effect": "", "condition": "amount > 1"}, "condition", "needs an effect"),
        ({"redact": "ok\n(unclosed"}, "redact", "line 2"),
        ({"redact": "a*"}, "redact", "empty string"),
        ({"max_steps": "0"}, "max_steps", "1 or more"),
        ({"max_steps": "-5"}, "max_steps", ""),
        ({"effect": "maybe"}, "effect", ""),
        ({}, "effect", "does nothing"),
    ],
)
def test_policy_form_rejects_bad_rules_with_field_errors(admin_client, fields, field, message):
    data = {"name": "p", "enabled": "on", "tool": "", "agent": "", "effect": "", **fields}
    assert_form_refuses(admin_client, "/admin/agentflow/policy/add/", data, field, message)
    assert not Policy.objects.exists()


def test_a_database_failure_reading_policies_leaves_the_run_to_be_retried(
    recording_dispatcher, monkeypatch
):
    """The gate lets the error out; the engine makes it a retry, never the run's failure."""
    from django.db import OperationalError

    run = agentflow.start("tests.mixed", {"n": 1})

    def unreachable(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(Policy.objects, "filter", unreachable)
    assert executor.advance(run.id, worker="test") == "store-unavailable"
    run.refresh_from_db()
    assert run.status == Run.Status.RUNNING and run.error is None
    assert not Step.objects.filter(run=run).exists()


def test_a_database_failure_rereading_redaction_patterns_mid_step_is_a_retry(
    recording_dispatcher, monkeypatch
):
    """Recording a step re-reads the redaction patterns when their cache is stale."""
    from django.db import OperationalError

    from agentflow._guardrails import redaction

    run = agentflow.start("tests.three_steps")

    def unreachable(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    real_pattern = redaction._pattern
    calls = {"n": 0}

    def stale_after_the_start(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:  # the first step's record finds the cache stale, the DB gone
            unreachable()
        return real_pattern()

    monkeypatch.setattr(redaction, "_pattern", stale_after_the_start)
    assert executor.advance(run.id, worker="test") == "store-unavailable"
    run.refresh_from_db()
    assert run.status == Run.Status.RUNNING and not run.error  # nothing failed

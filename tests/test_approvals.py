"""Humans in the loop: ctx.approve, tool approvals, decisions, permissions and timeouts."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.core.exceptions import PermissionDenied
from django.test import Client
from django.utils import timezone

import agentflow
from agentflow._engine import executor
from agentflow.models import Approval, Event, Run, Step
from tests.support import all_at_once, run_ids, wait_until
from tests.testapp.models import Execution, SideEffect

pytestmark = pytest.mark.django_db(transaction=True)


def advance(run: Run) -> str:
    return executor.advance(run.id, worker="test")


def reviewer(name: str = "reviewer", *, staff: bool = True, permitted: bool = True) -> User:
    user = User.objects.create_user(name, password="pw", is_staff=staff)
    if permitted:
        user.user_permissions.add(Permission.objects.get(codename="decide_approval"))
    return User.objects.get(id=user.id)  # fresh: the permission cache is per instance


def test_twenty_concurrent_decisions_record_one_and_resume_once(recording_dispatcher):
    run = agentflow.start("tests.asker", {})
    assert advance(run) == "waiting"
    approval = Approval.objects.get(run=run)
    assert approval.status == Approval.Status.PENDING and approval.request["data"] == {"limit": 10}
    user = reviewer()
    recording_dispatcher.clear()
    calls = iter(range(20))

    def decide() -> str:
        n = next(calls)
        try:
            if n % 2:
                agentflow.reject(approval.id, by=user, comment=f"no {n}")
            else:
                agentflow.approve(approval.id, by=user, data={"limit": n}, comment=f"yes {n}")
        except agentflow.AlreadyDecided:
            return "already"
        return "decided"

    outcomes = all_at_once(decide, threads=20)
    assert sorted(outcomes) == ["already"] * 19 + ["decided"]
    assert run_ids(recording_dispatcher) == [run.id]  # one resume
    assert Event.objects.filter(run=run, type="approval.decided").count() == 1
    approval.refresh_from_db()
    assert approval.decided_by == user and approval.decided_at is not None

    assert advance(run) == "succeeded"
    run.refresh_from_db()
    assert run.output["approved"] == (approval.status == Approval.Status.APPROVED)
    assert run.output["comment"] == approval.comment and run.output["by"] == "reviewer"
    if approval.status == Approval.Status.APPROVED:
        assert run.output["data"] == approval.data
    assert agentflow.replay(run).ok


@pytest.mark.parametrize(
    ("staff", "permitted"), [(False, False), (True, False), (False, True)], ids=str
)
def test_a_user_without_the_permission_or_the_rule_is_refused(
    recording_dispatcher, staff, permitted
):
    run = agentflow.start("tests.asker", {})
    advance(run)
    approval = Approval.objects.get(run=run)
    user = reviewer(staff=staff, permitted=permitted)
    events = Event.objects.filter(run=run).count()
    with pytest.raises(PermissionDenied, match="decide_approval"):
        agentflow.approve(approval, by=user)
    client = Client()
    client.force_login(user)
    response = client.post(f"/agentflow/approvals/{approval.id}/decide/", {"decision": "reject"})
    assert response.status_code == 403, response.content
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING and approval.decided_by is None
    assert Event.objects.filter(run=run).count() == events


def test_a_custom_object_rule_is_asked(recording_dispatcher, settings):
    settings.AGENTFLOW = {**settings.AGENTFLOW, "APPROVAL_RULE": "tests.support.never"}
    run = agentflow.start("tests.asker", {})
    advance(run)
    with pytest.raises(PermissionDenied, match=r"tests\.support\.never"):
        agentflow.approve(Approval.objects.get(run=run), by=reviewer())


def test_the_decide_view_checks_csrf_and_answers_409_for_a_second_decision(recording_dispatcher):
    run = agentflow.start("tests.asker", {})
    advance(run)
    approval = Approval.objects.get(run=run)
    url = f"/agentflow/approvals/{approval.id}/decide/"
    client = Client(enforce_csrf_checks=True)
    client.force_login(reviewer())
    assert client.post(url, {"decision": "approve"}).status_code == 403  # no CSRF token
    assert client.get(url).status_code == 405

    client = Client()
    client.force_login(User.objects.get(username="reviewer"))
    bad = client.post(url, {"decision": "approve", "data": '{"limit": "ten"}'})
    assert bad.status_code == 400
    assert "data.limit" in bad.json()["error"] and "integer" in bad.json()["error"]
    assert client.post(url, {"decision": "maybe"}).status_code == 400
    # The approval is looked up before anything is read from the request.
    assert client.post("/agentflow/approvals/999999/decide/", {"decision": "x"}).status_code == 404
    assert (
        client.post("/agentflow/approvals/999999/decide/", {"decision": "reject"}).status_code
        == 404
    )
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING  # refused data changed nothing

    ok = client.post(url, {"decision": "approve", "data": '{"limit": 3}', "comment": "fine"})
    assert ok.status_code == 200 and ok.json()["status"] == "approved"
    again = client.post(url, {"decision": "reject"})
    assert again.status_code == 409 and "already approved by reviewer" in again.json()["error"]
    assert advance(run) == "succeeded"
    run.refresh_from_db()
    assert run.output["data"] == {"limit": 3} and run.output["comment"] == "fine"


def test_an_edited_tool_approval_is_validated_and_runs_the_edited_args(recording_dispatcher):
    run = agentflow.start("tests.payer", {"invoice": "A-1", "amount": 500})
    assert advance(run) == "waiting"
    assert not Execution.objects.exists()  # nothing runs before a person says so
    approval = Approval.objects.get(run=run)
    assert approval.tool == "tests.pay" and approval.request["args"] == {
        "invoice": "A-1",
        "amount": 500,
    }
    assert approval.binding and approval.step.status == Step.Status.WAITING
    user = reviewer()
    with pytest.raises(agentflow.InvalidInput, match="amount"):
        agentflow.approve(approval, by=user, data={"invoice": "A-1", "amount": "lots"})
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING
    agentflow.approve(approval, by=user, data={"invoice": "A-1", "amount": 450})
    assert advance(run) == "succeeded"
    run.refresh_from_db()
    assert run.output == {"paid": 450}
    assert list(Execution.objects.values_list("key", flat=True)) == ["pay:A-1:450"]


def test_a_rejected_tool_call_raises_policy_denied_and_never_runs(recording_dispatcher):
    run = agentflow.start("tests.payer", {"invoice": "B-2", "amount": 9})
    advance(run)
    agentflow.reject(Approval.objects.get(run=run), by=reviewer(), comment="not this month")
    assert advance(run) == "succeeded"
    run.refresh_from_db()
    assert "was rejected by reviewer (not this month)" in run.output["refused"]
    assert not SideEffect.objects.exists()
    assert agentflow.replay(run).ok


def test_an_approval_timeout_applies_its_default_across_a_worker_restart(workers):
    first = workers("w1", beat=True)
    run = agentflow.start("tests.asker", {"timeout": 5, "default": "approve"})
    # Returns once the run waits for a person: the approval is recorded and the worker free.
    assert agentflow.wait(run, timeout=30).status == Run.Status.WAITING
    approval = Approval.objects.get(run=run)
    first.kill()  # SIGKILL: the timer message and the worker are gone with it
    wait_until(
        lambda: timezone.now() > approval.expires_at, timeout=10, what="the deadline to pass"
    )
    assert Approval.objects.get(id=approval.id).status == Approval.Status.PENDING
    assert agentflow.wait(run, timeout=5).status == Run.Status.WAITING  # for a person
    workers("w2", beat=True)
    wait_until(lambda: Run.objects.get(id=run.id).is_finished, timeout=60, what="the run to finish")
    run = Run.objects.get(id=run.id)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output["approved"] is True and run.output["status"] == "expired"
    assert run.output["data"] == {"limit": 10}  # nobody edited it: the agent's own data
    approval.refresh_from_db()
    assert approval.status == Approval.Status.EXPIRED and approval.decided_by is None
    decided = Event.objects.get(run=run, type="approval.decided")
    assert decided.data["status"] == "expired" and decided.data["approved"] is True


def test_a_policy_rule_with_a_condition_sends_big_calls_to_a_person(workers):
    from agentflow.models import Policy

    Policy.objects.create(
        name="big transfers", tool="tests.transfer", effect="approve", condition="amount > 1000"
    )
    workers("w1")
    run = agentflow.start("tests.transferrer", {"amounts": ["50", "1500.00", "999.99"]})
    approval = wait_until(
        lambda: Approval.objects.filter(run=run).first(), timeout=30, what="the approval"
    )
    assert approval.request["args"] == {"amount": "1500.00"} and approval.index == 1
    assert "Policy 'big transfers' requires approval" in approval.request["reason"]
    wait_until(
        lambda: Execution.objects.count() == 2, timeout=30, what="the small transfers to run"
    )
    assert agentflow.wait(run, timeout=30).status == Run.Status.WAITING  # for the person
    agentflow.reject(approval, by=reviewer(), comment="too much")
    run = agentflow.wait(run, timeout=60)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output[0] == "50" and run.output[2] == "999.99"
    assert "rejected by reviewer" in run.output[1]
    assert sorted(Execution.objects.values_list("key", flat=True)) == [
        "transfer:50",
        "transfer:999.99",
    ]


def test_an_approval_cannot_be_changed_in_the_admin(admin_client, recording_dispatcher):
    """The admin form once let staff edit the schema, default and deadline of a pending
    approval; a default of 'approve' with a past deadline decided it without the decide
    permission, so approvals are now read-only there (decisions go through decide)."""
    run = agentflow.start("tests.asker", {})
    advance(run)
    approval = Approval.objects.get(run=run)
    response = admin_client.post(
        f"/admin/agentflow/approval/{approval.id}/change/",
        {"title": "Raise?", "schema": '{"type": "nonsense"}', "default": "approve"},
    )
    assert response.status_code == 403
    approval.refresh_from_db()
    assert approval.schema["type"] == "object" and approval.default == "reject"

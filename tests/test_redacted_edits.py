"""A reviewer's edit keeps the real value of every redacted field it left alone.

The red-team probe changed only the amount of a payment whose memo held a secret: the tool
was sent ``pay 50 [redacted]``, and ``ctx.approve`` data was corrupted the same way. The
stored copies stay redacted; what the tool and the agent get is real.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

import agentflow
from agentflow._engine import child_runner, executor
from agentflow.models import Approval, Run, Step
from tests.support import RecordingDispatcher
from tests.test_approvals import reviewer
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "sk-live0123456789abcdefXYZ"
MEMO = f"refund, key {SECRET}"


def test_an_edited_tool_call_keeps_the_real_values_the_reviewer_left_alone(
    recording_dispatcher,
):
    run = agentflow.start("tests.wirer", {"amount": 100, "memo": MEMO, "account": SECRET})
    assert executor.advance(run.id, worker="t") == "waiting"
    approval = Approval.objects.get(run=run)
    shown = approval.request["args"]
    assert SECRET not in str(shown) and shown["account"] == "[redacted]"
    # The reviewer changes the amount only and sends the form back as it was shown.
    agentflow.approve(approval, by=reviewer(), data={**shown, "amount": 50})
    assert executor.advance(run.id, worker="t") == "waiting"  # now the fan-out's approval
    assert Execution.objects.filter(key=f"wire:50:{MEMO}:{SECRET}").count() == 1

    child_approval = Approval.objects.get(run=run, index=0)
    assert child_approval.request["args"]["memo"] == "refund, key [redacted]"
    agentflow.approve(
        child_approval, by=reviewer("second"), data={**child_approval.request["args"], "amount": 7}
    )
    for step_id, _ in RecordingDispatcher.children:
        child_runner.run_child(step_id)
    assert executor.advance(run.id, worker="t") == "succeeded"
    assert Execution.objects.filter(key=f"wire:7:{MEMO}:{SECRET}").count() == 1
    assert not Execution.objects.filter(key__contains="[redacted]").exists()
    # Stored: redacted everywhere.
    stored = str(list(Step.objects.filter(run=run).values_list("args", "output")))
    stored += str(list(Approval.objects.filter(run=run).values_list("data", "request")))
    assert SECRET not in stored


def test_edited_approval_data_keeps_the_real_values_the_reviewer_left_alone(
    recording_dispatcher,
):
    run = agentflow.start("tests.keyed_asker", {"key": SECRET})
    assert executor.advance(run.id, worker="t") == "waiting"
    approval = Approval.objects.get(run=run)
    shown = approval.request["data"]
    assert shown == {"limit": 10, "key": "[redacted]", "keys": ["[redacted]", "plain"]}
    agentflow.approve(approval, by=reviewer(), data={**shown, "limit": 20})
    assert executor.advance(run.id, worker="t") == "succeeded"
    run.refresh_from_db()
    assert SECRET not in str(run.output)  # the stored output is redacted ...
    assert agentflow.replay(run).ok
    # ... while the agent got the real values (it returned them; sealed in the step).
    from agentflow._guardrails.sealing import reveal

    step = Step.objects.get(run=run, position=0)
    real = reveal(step.output, step.sealed_output)
    assert real["data"] == {"limit": 20, "key": SECRET, "keys": [SECRET, "plain"]}


def test_a_changed_text_that_still_holds_a_redacted_secret_is_refused(recording_dispatcher):
    run = agentflow.start("tests.wirer", {"amount": 100, "memo": MEMO, "account": "acct-1"})
    executor.advance(run.id, worker="t")
    approval = Approval.objects.get(run=run)
    edited = {**approval.request["args"], "memo": "refund (typo fixed), key [redacted]"}
    with pytest.raises(agentflow.InvalidInput, match=r"changes \$\.memo, which holds a redacted"):
        agentflow.approve(approval, by=reviewer(), data=edited)
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING
    # Retyping the whole value is taken as it is.
    agentflow.approve(approval, by=reviewer("other"), data={**edited, "memo": "plain memo"})
    executor.advance(run.id, worker="t")
    assert Execution.objects.filter(key="wire:100:plain memo:acct-1").count() == 1


def test_the_form_marks_the_fields_that_hide_a_secret(admin_client, recording_dispatcher):
    run = agentflow.start("tests.wirer", {"amount": 100, "memo": MEMO, "account": "acct-1"})
    executor.advance(run.id, worker="t")
    html = admin_client.get(reverse("admin:agentflow_run_change", args=[run.id])).content.decode()
    assert 'data-testid="redacted-memo"' in html
    assert 'data-testid="redacted-account"' not in html
    assert 'data-testid="redacted-amount"' not in html
    assert SECRET not in html
    assert Run.objects.get(id=run.id).status == Run.Status.WAITING

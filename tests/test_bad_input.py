"""Bad input is refused with a message that names the problem, and nothing is half-written."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

import agentflow
from agentflow.models import Event, Run

pytestmark = pytest.mark.django_db


def test_unknown_agent_is_refused_naming_the_known_ones():
    with pytest.raises(agentflow.UnknownAgent) as caught:
        agentflow.start("billing.nope", {})
    message = str(caught.value)
    assert "No agent named 'billing.nope'" in message
    assert "billing.reconcile" in message and "tests.mixed" in message
    assert "INSTALLED_APPS" in message
    assert not Run.objects.exists()


def test_unknown_agent_from_the_command_line():
    with pytest.raises(CommandError, match="No agent named 'nope'"):
        call_command("agentflow", "start", "nope")
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{bad json", "--input is not valid JSON"),
        ("[1, 2]", "--input must be a JSON object"),
        ('{"n": "lots"}', "n: Input should be a valid integer"),
        ('{"n": 1, "extra": true}', "extra: Extra inputs are not permitted"),
        ("{}", "n: Field required"),
        ('{"n": NaN}', "--input is not JSON: it holds NaN"),
        ('{"n": ' + "[" * 100_000 + "]" * 100_000 + "}", "--input is nested deeper than"),
        ('{"n": "\\u0000"}', "NUL character"),
    ],
)
def test_invalid_input_from_the_command_line(text, expected):
    with pytest.raises(CommandError, match=expected):
        call_command("agentflow", "start", "tests.mixed", "--input", text)
    assert not Run.objects.exists()
    assert not Event.objects.exists()


def test_input_of_the_wrong_type_or_not_json_is_refused():
    with pytest.raises(agentflow.InvalidInput, match="timeout: Input should be a valid number"):
        agentflow.start("tests.waiter", {"timeout": "soon"})
    with pytest.raises(
        agentflow.PayloadError, match=r"input of agent billing\.reconcile is not JSON"
    ):
        agentflow.start("billing.reconcile", {"settle_seconds": float("nan")})
    assert not Run.objects.exists()


def test_oversized_input_is_refused(settings):
    settings.AGENTFLOW = {**settings.AGENTFLOW, "MAX_PAYLOAD_BYTES": 100}
    with pytest.raises(agentflow.PayloadError, match="over AGENTFLOW\\['MAX_PAYLOAD_BYTES'\\]"):
        agentflow.start("billing.reconcile", {"period": "x" * 200})
    assert not Run.objects.exists()


def test_status_of_a_missing_or_malformed_run_id():
    with pytest.raises(CommandError, match="There is no run 00000000-0000-0000-0000-000000000000"):
        call_command("agentflow", "status", "00000000-0000-0000-0000-000000000000")
    with pytest.raises(CommandError, match="'not-a-uuid' is not a run id"):
        call_command("agentflow", "status", "not-a-uuid")


def test_signal_to_a_missing_run():
    with pytest.raises(agentflow.InvalidInput, match="There is no run"):
        agentflow.signal("00000000-0000-0000-0000-000000000000", "go")


@pytest.mark.django_db(transaction=True)
def test_an_oversized_step_output_tool_output_or_event_is_refused_and_the_run_goes_on(
    recording_dispatcher, settings
):
    from agentflow.engine import executor
    from agentflow.models import Step
    from tests.testapp.models import Execution

    settings.AGENTFLOW = {**settings.AGENTFLOW, "MAX_PAYLOAD_BYTES": 2_000}
    run = agentflow.start("tests.oversized", {"size": 5_000})
    outcome = executor.advance(run.id, worker="t")
    run.refresh_from_db()
    assert outcome == "succeeded", run.error
    limit = "over AGENTFLOW['MAX_PAYLOAD_BYTES']"
    assert "output of step tests.testapp.agents.bulky_text" in run.output["step"]
    assert "output of tool tests.bulky" in run.output["call"]
    assert "data of event note" in run.output["emit"]
    assert all(limit in run.output[key] for key in ("step", "call", "emit")), run.output
    assert run.output["after"] == "xxx"
    assert Execution.objects.filter(key="bulky:5000").count() == 1  # refused, not retried
    steps = list(Step.objects.filter(run=run).order_by("position"))
    assert [(s.kind, s.status) for s in steps] == [
        ("step", Step.Status.FAILED),
        ("call", Step.Status.FAILED),
        ("step", Step.Status.SUCCEEDED),  # the refused event took no position
    ]
    assert not Event.objects.filter(run=run, type="note").exists()
    assert "x" * 2_000 not in str(list(Event.objects.filter(run=run).values_list("data")))
    events = Event.objects.filter(run=run).count()
    assert agentflow.replay(run).ok  # the refusals replay as they happened
    assert Event.objects.filter(run=run).count() == events

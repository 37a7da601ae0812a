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
    from agentflow._engine import executor
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


# -- what a red-team probe sent (issue 20): a clear refusal, never a 500 -------------------

HUGE = "9" * 5_000  # more digits than Python converts to an int (sys.get_int_max_str_digits)


def _csrf_client(username: str = "boss"):
    """A logged-in superuser's client that checks CSRF tokens, as a browser meets the site."""
    from django.contrib.auth.models import User
    from django.test import Client

    User.objects.create_superuser(username, password="pw")
    client = Client(enforce_csrf_checks=True)
    client.login(username=username, password="pw")
    return client


def _token(client, url: str) -> str:
    """The CSRF token of the form on the page at ``url``, as the console's script reads it."""
    import re

    page = client.get(url)
    assert page.status_code == 200
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())[1]


def _waiting_approval() -> tuple[Run, object]:
    from agentflow._engine import executor
    from agentflow.models import Approval

    run = agentflow.start("tests.asker", {})
    assert executor.advance(run.id, worker="test") == "waiting"
    return run, Approval.objects.get(run=run)


@pytest.mark.parametrize("position", ["²", HUGE], ids=["superscript-two", "5000-digits"])
def test_a_fork_position_that_is_no_plain_number_is_refused_with_a_message(
    admin_client, recording_dispatcher, position
):
    import html

    from django.contrib.admin.models import LogEntry
    from django.urls import reverse

    from agentflow._engine import executor

    run = agentflow.start("tests.mixed", {"n": 3})
    while executor.advance(run.id, worker="test") not in ("succeeded", "failed"):
        pass
    url = reverse("admin:agentflow_run_fork", args=[run.id])
    response = admin_client.post(url, {"position": position}, follow=True)

    assert response.status_code == 200
    page = html.unescape(response.content.decode())
    assert "Fork from which position? Give a whole number from 0 to the run" in page
    assert f"not {position[:50]!r}"[:-1] in page  # the bad position, named
    assert "more)" in page or len(position) < 200  # ... and cut short
    assert HUGE not in page
    assert not Run.objects.filter(parent=run).exists()
    assert not LogEntry.objects.exists()


def test_decide_refuses_a_number_too_long_to_read_and_the_approval_stays_pending(
    recording_dispatcher,
):
    from django.contrib.auth.models import User
    from django.urls import reverse

    from agentflow.models import Approval

    run, approval = _waiting_approval()
    client = _csrf_client()
    token = _token(client, reverse("admin:agentflow_run_change", args=[run.id]))
    url = reverse("agentflow:decide", args=[approval.id])

    answer = client.post(
        url,
        {"decision": "approve", "data": '{"limit": ' + HUGE + "}", "csrfmiddlewaretoken": token},
    )
    assert answer.status_code == 400, answer.content[:300]
    error = answer.json()["error"]
    assert error.startswith("data holds a number of more than 4,300 digits"), error
    assert "Send a longer number as a string" in error and HUGE not in error

    # The API names where the number is.
    with pytest.raises(agentflow.PayloadError) as caught:
        agentflow.approve(approval, by=User.objects.get(username="boss"), data={"limit": 10**5_000})
    assert "holds an integer of about 5,000 digits at $.limit" in str(caught.value)
    assert "Send a longer number as a string" in str(caught.value)

    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING
    assert not Event.objects.filter(run=run, type="approval.decided").exists()
    assert Run.objects.get(id=run.id).status == Run.Status.WAITING


def test_a_decision_comment_over_the_limit_is_refused_and_the_run_stays_consistent(
    recording_dispatcher,
):
    from django.contrib.auth.models import User
    from django.urls import reverse

    from agentflow._engine import executor
    from agentflow._engine.decisions import MAX_COMMENT_CHARS
    from agentflow.models import Approval

    assert MAX_COMMENT_CHARS == 10_000  # the documented limit (docs/approvals-budgets-policies)
    run, approval = _waiting_approval()
    client = _csrf_client()
    token = _token(client, reverse("admin:agentflow_run_change", args=[run.id]))
    url = reverse("agentflow:decide", args=[approval.id])
    too_long = "x" * (MAX_COMMENT_CHARS + 1)

    for decision in ("approve", "reject"):
        answer = client.post(
            url, {"decision": decision, "comment": too_long, "csrfmiddlewaretoken": token}
        )
        assert answer.status_code == 400, answer.content[:300]
        error = answer.json()["error"]
        assert f"The comment on approval {approval.id} ('Raise the limit?')" in error
        assert "10,001 characters long, over the limit of 10,000" in error
        assert "Nothing was decided" in error and too_long not in error
    boss = User.objects.get(username="boss")
    for decide in (agentflow.approve, agentflow.reject):
        with pytest.raises(agentflow.InvalidInput, match="over the limit of 10,000"):
            decide(approval, by=boss, comment="y" * 1_600_000)  # the probe's 1.6 MB
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="over the limit of 10,000"):
        call_command("agentflow", "reject", str(approval.id), "--as", "boss", "--comment", too_long)

    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING and approval.comment == ""
    assert not Event.objects.filter(run=run, type="approval.decided").exists()
    assert Run.objects.get(id=run.id).status == Run.Status.WAITING

    # A comment at the limit is kept, and the run goes on to the end.
    at_limit = "z" * MAX_COMMENT_CHARS
    answer = client.post(
        url, {"decision": "approve", "comment": at_limit, "csrfmiddlewaretoken": token}
    )
    assert answer.status_code == 200 and answer.json()["status"] == "approved"
    assert executor.advance(run.id, worker="test") == "succeeded"
    run.refresh_from_db()
    assert run.output["comment"] == at_limit


@pytest.mark.parametrize("value", ["NaN", "1e30", "Infinity", "99999999999999999999999"])
def test_a_budget_limit_that_is_no_number_in_range_is_refused_naming_it(value):
    field = "max_steps" if value.startswith("999") else "max_cost"
    with pytest.raises(agentflow.InvalidInput) as caught:
        agentflow.start("tests.mixed", {"n": 1}, budget={field: value})
    message = str(caught.value)
    assert message.startswith(f"budget for agent 'tests.mixed' is invalid: {field}={value!r}: ")
    allowed = "a number of US dollars from 0 to 99999999.999999" if field == "max_cost" else (
        "a whole number from 0 to 9223372036854775807"
    )  # fmt: skip
    assert allowed in message
    with pytest.raises(agentflow.InvalidInput, match=f"{field}={value!r}"):
        agentflow.schedule("tests.mixed", {"n": 1}, every=60, budget={field: value})
    assert not Run.objects.exists()
    from django_celery_beat.models import PeriodicTask

    from agentflow.models import Budget

    assert not Budget.objects.exists() and not PeriodicTask.objects.exists()


@pytest.mark.parametrize("value", [HUGE, 10**5_000, -(10**5_000)], ids=["text", "int", "neg"])
def test_a_budget_limit_too_long_to_print_is_refused_with_a_short_message(value):
    with pytest.raises(agentflow.InvalidInput) as caught:
        agentflow.start("tests.mixed", {"n": 1}, budget={"max_steps": value})
    message = str(caught.value)
    assert message.startswith("budget for agent 'tests.mixed' is invalid: max_steps=")
    assert "a whole number from 0 to 9223372036854775807" in message
    assert len(message) < 1_000
    assert not Run.objects.exists()


@pytest.mark.parametrize("value", ["NaN", "1e30"])
def test_the_budget_form_refuses_a_cost_that_is_no_number_in_range(admin_client, value):
    from django.urls import reverse

    from agentflow.models import Budget

    response = admin_client.post(
        reverse("admin:agentflow_budget_add"),
        {"name": "b", "enabled": "on", "period": "total", "max_cost": value},
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["max_cost"], errors
    assert not Budget.objects.exists()


def test_the_schedule_form_refuses_an_interval_too_long_to_store(admin_client):
    import html

    from django.urls import reverse
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    response = admin_client.post(
        reverse("admin:agentflow_run_schedule_add"),
        {"agent": "tests.mixed", "input": '{"n": 1}', "every": "99999999999", "enabled": "on"},
    )
    assert response.status_code == 200
    page = html.unescape(response.content.decode())
    assert (
        "Schedule of agent 'tests.mixed': every=99999999999 must be a whole number of seconds, "
        "at least 1 and at most 2,147,483,647"
    ) in page
    assert not PeriodicTask.objects.exists() and not IntervalSchedule.objects.exists()

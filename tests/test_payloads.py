"""No payload can make a run loop: values PostgreSQL or JSON cannot hold are refused where
they are encoded, naming the value and the problem, and the run fails once instead."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

import agentflow
from agentflow._engine import executor
from agentflow._engine.serialize import MAX_DEPTH, dumps, parse
from agentflow.models import Approval, Event, Run, Signal, Step
from tests.testapp.agents import SLEEPS, TIMEOUTS
from tests.testapp.models import Execution

KINDS = {"nul": "NUL character (\\x00)", "surrogate": "lone surrogate (\\ud800)"}


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


# -- the encoder ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"items": [0, {"name": "a\x00b"}]}, "holds a NUL character (\\x00) at $.items[1].name"),
        ({"items": ["\ud800"]}, "holds a lone surrogate (\\ud800) at $.items[0]"),
        ({"a": {"b\x00": 1}}, "holds a NUL character (\\x00 in a key) at $.a"),
        ({"ratio": float("nan")}, "holds NaN at $.ratio"),
        ([1, float("inf")], "holds Infinity at $[1]"),
        ({float("-inf"): 1}, "holds -Infinity in a key at $"),
        (nested(100_000), f"is nested deeper than {MAX_DEPTH} levels"),
        ((lambda x: x.append(x) or x)([]), f"is nested deeper than {MAX_DEPTH} levels"),
    ],
    ids=["nul", "surrogate", "nul-key", "nan", "inf", "inf-key", "deep", "cycle"],
)
def test_dumps_refuses_what_cannot_be_stored_naming_the_value_and_the_place(value, problem):
    with pytest.raises(agentflow.PayloadError) as caught:
        dumps(value, what="output of tool t")
    message = str(caught.value)
    assert message.startswith("output of tool t ") and problem in message, message


def test_dumps_takes_the_deepest_allowed_nesting_and_text_that_is_only_unusual():
    assert dumps(nested(MAX_DEPTH), what="x") == "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert json.loads(dumps({"emoji": "😀", "escaped": "\\u0000"}, what="x")) == {
        "emoji": "😀",
        "escaped": "\\u0000",
    }


def test_the_runtimes_own_records_replace_bad_characters_instead_of_failing():
    record = {"message": "tool said a\x00b \ud800", "type": "ValueError"}
    stored = json.loads(dumps(record, what="run error", limited=False))
    assert stored == {"message": "tool said a\ufffdb \ufffd", "type": "ValueError"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"limit": NaN}', "holds NaN"),
        ("[Infinity]", "holds Infinity"),
        ('{"a": "x\\u0000"}', "holds a NUL character (\\x00) at $.a"),
        ('["\\udc80"]', "holds a lone surrogate (\\udc80) at $[0]"),
        ("[" * 100_000 + "]" * 100_000, f"is nested deeper than {MAX_DEPTH} levels"),
        ("[" * 500 + "]" * 500, f"is nested deeper than {MAX_DEPTH} levels"),
        ("{bad", "is not valid JSON"),
    ],
    ids=["nan", "infinity", "nul", "surrogate", "deep", "deeper-than-the-limit", "syntax"],
)
def test_parse_refuses_what_dumps_refuses(text, problem):
    with pytest.raises(agentflow.PayloadError) as caught:
        parse(text, what="data")
    assert str(caught.value).startswith("data ") and problem in str(caught.value)


# -- start, signal, decide: refused before anything is written -----------------------


MIXED = "input of agent tests.mixed"
KEY = "idempotency_key of agent tests.mixed"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("agent", "kwargs", "problem"),
    [
        (
            "tests.transferrer",
            {"input": {"amounts": ["a\x00"]}},
            "input of agent tests.transferrer holds a NUL character (\\x00) at $.amounts[0]",
        ),
        (
            "tests.transferrer",
            {"input": {"amounts": ["\ud800"]}},
            "input of agent tests.transferrer holds a lone surrogate (\\ud800) at $.amounts[0]",
        ),
        ("tests.mixed", {"input": {"n": nested(100_000)}}, f"{MIXED} is nested deeper than 100"),
        ("tests.mixed", {"input": {"n": float("nan")}}, f"{MIXED} is not JSON: it holds NaN"),
        ("tests.mixed", {"input": {"n": 1}, "idempotency_key": "k\x00"}, f"{KEY} holds a NUL"),
        (
            "tests.mixed",
            {"input": {"n": 1}, "idempotency_key": "k" * 10_000},
            f"{KEY} is 10,000 characters long, over the limit of 255",
        ),
        (
            "tests.mixed",
            {"input": {"n": 1}, "idempotency_key": "k\udfff"},
            f"{KEY} holds a lone surrogate (\\udfff)",
        ),
    ],
    ids=["nul", "surrogate", "deep", "nan", "key-nul", "key-long", "key-surrogate"],
)
def test_start_refuses_an_unstorable_input_or_key_and_writes_nothing(
    recording_dispatcher, agent, kwargs, problem
):
    with pytest.raises(agentflow.PayloadError) as caught:
        agentflow.start(agent, **kwargs)
    assert problem in str(caught.value)
    assert not Run.objects.exists() and not Event.objects.exists()
    assert recording_dispatcher == []


@pytest.mark.django_db
def test_the_longest_idempotency_key_the_column_holds_is_taken(recording_dispatcher):
    key = "k" * Run._meta.get_field("idempotency_key").max_length
    run = agentflow.start("tests.mixed", {"n": 1}, idempotency_key=key)
    assert agentflow.start("tests.mixed", {"n": 1}, idempotency_key=key).id == run.id


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        ("go", {"x": "\x00"}, "data of signal go holds a NUL character (\\x00) at $.x"),
        ("go", nested(100_000), f"data of signal go is nested deeper than {MAX_DEPTH}"),
        ("go", [float("nan")], "data of signal go is not JSON: it holds NaN at $[0]"),
        ("g\x00", None, "signal name holds a NUL character"),
        ("g" * 201, None, "signal name is 201 characters long, over the limit of 200"),
    ],
    ids=["nul", "deep", "nan", "name-nul", "name-long"],
)
def test_a_signal_that_cannot_be_stored_is_refused_and_writes_nothing(
    recording_dispatcher, name, data, problem
):
    run = agentflow.start("tests.waiter", {})
    events = Event.objects.filter(run=run).count()
    with pytest.raises(agentflow.PayloadError) as caught:
        agentflow.signal(run, name, data)
    assert problem in str(caught.value)
    assert not Signal.objects.exists()
    assert Event.objects.filter(run=run).count() == events


def reviewer(name: str = "reviewer", *, permitted: bool = True) -> User:
    user = User.objects.create_user(name, password="pw", is_staff=True)
    if permitted:
        user.user_permissions.add(Permission.objects.get(codename="decide_approval"))
    return User.objects.get(id=user.id)


def pending_approval() -> Approval:
    run = agentflow.start("tests.asker", {})
    assert executor.advance(run.id, worker="test") == "waiting"
    return Approval.objects.get(run=run)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("data", "comment", "problem"),
    [
        ({"limit": float("nan")}, "", "is not JSON: it holds NaN at $.limit"),
        ({"limit": 1, "note": "\x00"}, "", "holds a NUL character (\\x00) at $.note"),
        (nested(100_000), "", f"is nested deeper than {MAX_DEPTH} levels"),
        ({"limit": 1}, "fine\x00", "comment on approval"),
    ],
    ids=["nan", "nul", "deep", "comment-nul"],
)
def test_decision_data_that_cannot_be_stored_is_refused_and_decides_nothing(
    recording_dispatcher, data, comment, problem
):
    approval = pending_approval()
    with pytest.raises(agentflow.PayloadError) as caught:
        agentflow.approve(approval, by=reviewer(), data=data, comment=comment)
    assert problem in str(caught.value)
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING and approval.data is None


# -- the decide view -----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ('{"limit": NaN}', "data is not JSON: it holds NaN"),
        ('{"limit": 1, "note": "\\u0000"}', "data holds a NUL character (\\x00) at $.note"),
        ('{"limit": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested deeper than"),
        ('{"limit": ' + "[" * 200 + "]" * 200 + "}", "nested deeper than"),
    ],
    ids=["nan", "nul", "deep", "deeper-than-the-limit"],
)
def test_the_decide_view_answers_400_naming_the_problem_of_bad_data(
    recording_dispatcher, data, problem
):
    approval = pending_approval()
    client = Client()
    client.force_login(reviewer())
    response = client.post(
        f"/agentflow/approvals/{approval.id}/decide/", {"decision": "approve", "data": data}
    )
    assert response.status_code == 400, response.content[:500]
    assert problem in response.json()["error"]
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING


@pytest.mark.django_db(transaction=True)
def test_the_decide_view_checks_the_permission_before_it_reads_the_data(recording_dispatcher):
    approval = pending_approval()
    client = Client()
    client.force_login(reviewer("outsider", permitted=False))
    url = f"/agentflow/approvals/{approval.id}/decide/"
    for data in ('{"limit": NaN}', "[" * 100_000, "{bad"):
        response = client.post(url, {"decision": "approve", "data": data})
        assert response.status_code == 403, response.content[:500]
    anonymous = Client().post(url, {"decision": "approve", "data": "[" * 100_000})
    assert anonymous.status_code == 403
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING


@pytest.mark.django_db(transaction=True)
def test_a_user_without_the_permission_cannot_tell_a_missing_approval_from_a_refused_one(
    recording_dispatcher,
):
    approval = pending_approval()
    missing = Approval.objects.order_by("-id").first().id + 1000
    client = Client()
    client.force_login(reviewer("outsider", permitted=False))
    existing = client.post(f"/agentflow/approvals/{approval.id}/decide/", {"decision": "reject"})
    absent = client.post(f"/agentflow/approvals/{missing}/decide/", {"decision": "reject"})
    assert (existing.status_code, existing.content) == (absent.status_code, absent.content)
    assert existing.status_code == 403 and "decide_approval" in existing.json()["error"]
    body = existing.content.decode()
    assert str(approval.run_id) not in body and str(approval.id) not in body
    assert str(missing) not in body

    permitted = Client()
    permitted.force_login(reviewer())
    gone = permitted.post(f"/agentflow/approvals/{missing}/decide/", {"decision": "reject"})
    assert gone.status_code == 404
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING


# -- sleep -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_sleep_zero_records_and_announces_a_completed_step(recording_dispatcher):
    run = agentflow.start("tests.sleeper", {"seconds": 0})
    assert executor.advance(run.id, worker="test") == "succeeded"
    sleep = Step.objects.get(run=run, kind="sleep")
    assert sleep.status == Step.Status.SUCCEEDED
    types = [
        event.type
        for event in Event.objects.filter(run=run).order_by("seq")
        if event.data.get("position") == sleep.position
    ]
    assert types == ["step.completed"]


# -- on real workers: the run fails once, the tool runs once -------------------------


def failed_once(run: Run, *, advances: int = 1) -> Run:
    """Wait for the run; it must have FAILED with at most ``advances`` lease takes."""
    run = agentflow.wait(run, timeout=60)
    assert run.status == Run.Status.FAILED, (run.status, run.error)
    assert run.lease_token <= advances, f"the lease was taken {run.lease_token} times"
    return run


def ran(key: str) -> int:
    return Execution.objects.filter(key=key).count()


@pytest.mark.django_db(transaction=True)
def test_an_agent_returning_an_unstorable_string_fails_naming_its_return_value(workers):
    worker = workers("w1", concurrency=2)
    runs = {kind: agentflow.start("tests.payload_return", {"kind": kind}) for kind in KINDS}
    for kind, problem in KINDS.items():
        run = failed_once(runs[kind])
        assert run.error["type"] == "agentflow.exceptions.PayloadError"
        message = run.error["message"]
        assert f"output of run {run.id} (the agent's return value) holds a {problem}" in message
        assert "at $.items[1].name" in message
        assert ran(f"{run.id}:body") == 1
    assert "DataError" not in worker.log()


@pytest.mark.django_db(transaction=True)
def test_an_agent_emitting_an_unstorable_string_fails_naming_the_event_data(workers):
    worker = workers("w1", concurrency=2)
    runs = {kind: agentflow.start("tests.payload_emit", {"kind": kind}) for kind in KINDS}
    for kind, problem in KINDS.items():
        run = failed_once(runs[kind])
        message = run.error["message"]
        assert f"data of event note holds a {problem} at $.items[1].name" in message
        assert "the agent's return value" not in message  # the event is to blame, not it
        assert ran(f"{run.id}:body") == 1
        assert not Event.objects.filter(run=run, type="note").exists()
    assert "DataError" not in worker.log()


@pytest.mark.django_db(transaction=True)
def test_a_tool_returning_an_unstorable_string_runs_once_and_its_error_names_the_output(
    workers,
):
    worker = workers("w1", concurrency=2)
    runs = {kind: agentflow.start("tests.payload_call", {"kind": kind}) for kind in KINDS}
    for kind, problem in KINDS.items():
        run = failed_once(runs[kind])
        assert ran(f"{run.id}:0") == 1  # retries=3, but a refused output is not retried
        step = Step.objects.get(run=run, position=0)
        assert (step.status, step.attempts) == (Step.Status.FAILED, 1)
        output = f"output of tool tests.payload_tool at run {run.id} position 0"
        assert f"{output} holds a {problem} at $.items[1].name" in step.error["message"]
        assert "after 1 attempt(s)" in run.error["message"]
        assert "the agent's return value" not in run.error["message"]
    assert "DataError" not in worker.log()


@pytest.mark.django_db(transaction=True)
def test_each_fan_out_child_returning_an_unstorable_string_runs_once_and_names_its_output(
    workers,
):
    worker = workers("w1", concurrency=2)
    runs = {kind: agentflow.start("tests.payload_map", {"kind": kind, "n": 3}) for kind in KINDS}
    for kind, problem in KINDS.items():
        run = failed_once(runs[kind], advances=2)  # the fan-out, then its join
        children = Step.objects.filter(run=run, index__isnull=False).order_by("index")
        assert [(c.status, c.attempts) for c in children] == [(Step.Status.FAILED, 1)] * 3
        for child in children:
            assert ran(f"{run.id}:0:{child.index}") == 1
            output = f"output of tool tests.payload_tool at run {run.id} position 0 child"
            assert f"{output} {child.index} holds a {problem}" in child.error["message"]
        assert "3 of 3 calls of map tests.payload_tool failed" in run.error["message"]
    assert "DataError" not in worker.log()


@pytest.mark.django_db(transaction=True)
def test_a_sleep_no_timer_can_hold_fails_the_run_naming_the_limit(workers):
    worker = workers("w1", concurrency=2)
    refused = [*SLEEPS, *TIMEOUTS]
    runs = {how: agentflow.start("tests.payload_sleep", {"how": how}) for how in refused}
    for how, run in runs.items():
        run = failed_once(run)
        assert run.error["type"] == "agentflow.exceptions.InvalidInput", (how, run.error)
        assert "number of seconds from 0 to 3,153,600,000" in run.error["message"], how
        assert ran(f"{run.id}:body") == 1
        assert not Step.objects.filter(run=run).exists()
    assert "OverflowError" not in worker.log()
    # A sleep into the past is no sleep at all, as before.
    past = agentflow.wait(agentflow.start("tests.sleeper", {"seconds": -5}), timeout=60)
    assert past.status == Run.Status.SUCCEEDED, past.error

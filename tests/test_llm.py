"""``ctx.llm`` and ``ctx.llm_loop`` on real workers against a local OpenAI-compatible server."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest

import agentflow
from agentflow.models import Budget, BudgetSpend, Policy, Run, Step
from tests.anthropic_server import AnthropicServer
from tests.openai_server import OpenAIServer, Reply, ToolCall
from tests.support import GroupListener
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def model_server():
    with OpenAIServer() as server:
        yield server


@pytest.fixture
def model_workers(workers, model_server):
    """``start(name)``: a worker whose default model alias is the local server."""

    def start(name: str = "w1"):
        return workers(name, env={"AGENTFLOW_TEST_OPENAI_URL": model_server.base_url})

    return start


def test_a_model_call_is_a_step_with_the_usage_and_cost_the_server_reported(
    model_workers, model_server
):
    model_server.script(Reply("Paris is the capital of France.", usage=(120, 7)))
    model_workers()
    run = agentflow.wait(agentflow.start("tests.ask_model", {"question": "Capital?"}), 60)
    assert run.status == Run.Status.SUCCEEDED, run.error
    cost = (Decimal(120) * 2 + Decimal(7) * 8) / 1_000_000
    assert run.output == {
        "text": "Paris is the capital of France.",
        "usage": [120, 7],
        "cost": str(cost),
        "model": "gpt-test",
    }
    step = Step.objects.get(run=run, kind="llm")
    assert (step.name, step.status, step.attempts) == ("default", Step.Status.SUCCEEDED, 1)
    assert (step.input_tokens, step.output_tokens, step.cost) == (120, 7, cost)
    assert step.args["messages"] == [{"role": "user", "content": "Capital?"}]
    completed = run.events.get(type="step.completed", data__position=step.position)
    assert completed.data == {
        "position": step.position,
        "kind": "llm",
        "name": "default",
        "attempt": 1,
        "input_tokens": 120,
        "output_tokens": 7,
        "cost": str(cost),
    }
    (sent,) = model_server.requests
    assert sent["max_tokens"] == 64 and sent["stream"] is True
    # Replay hands back the recorded result: the model is not asked again.
    assert agentflow.replay(run).ok
    assert len(model_server.requests) == 1


def test_rate_limits_and_overloads_retry_honouring_retry_after(model_workers, model_server):
    arrived: list[float] = []
    replies = [
        Reply(status=429, retry_after=1, error_message="rate limited"),
        Reply(status=529, error_message="overloaded"),
        Reply("fine now", usage=(5, 2)),
    ]

    def answer(body: dict) -> Reply:
        arrived.append(time.monotonic())
        return replies[len(arrived) - 1]

    model_server.handler = answer
    model_workers()
    run = agentflow.wait(agentflow.start("tests.ask_model", {"question": "Again?"}), 60)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output["text"] == "fine now"
    assert len(arrived) == 3
    assert arrived[1] - arrived[0] >= 1.0  # the server asked for a second's rest
    step = Step.objects.get(run=run, kind="llm")
    assert (step.attempts, step.input_tokens, step.output_tokens) == (3, 5, 2)
    retried = run.events.filter(type="step.retrying").values_list("data", flat=True)
    assert [e["attempt"] for e in retried] == [1, 2]
    assert "HTTP 429: rate limited" in retried[0]["error"]


def test_a_refused_request_fails_the_step_at_once_with_the_server_message(
    model_workers, model_server
):
    model_server.script(Reply(status=400, error_message="max_tokens: must be at most 32"))
    model_workers()
    run = agentflow.wait(agentflow.start("tests.ask_model", {"question": "Long?"}), 60)
    assert run.status == Run.Status.FAILED
    assert len(model_server.requests) == 1
    step = Step.objects.get(run=run, kind="llm")
    assert (step.status, step.attempts) == (Step.Status.FAILED, 1)
    assert "model alias 'default'" in step.error["message"]
    assert "HTTP 400: max_tokens: must be at most 32" in run.error["message"]
    assert agentflow.replay(run).ok  # the failure replays as the same ToolError


def test_a_worker_killed_mid_stream_issues_only_that_model_call_again(model_workers, model_server):
    held = threading.Event()
    model_server.script(
        Reply("alpha beta gamma delta", hold=held, hold_after=2),
        Reply("the whole answer, from the top", usage=(9, 6)),
    )
    first = model_workers("doomed")
    run = agentflow.start("tests.ask_model", {"question": "Stream?"})
    assert model_server.streaming.wait(60), "the model call never started streaming"
    first.kill()  # SIGKILL, mid-stream
    held.set()
    model_workers("survivor")
    run = agentflow.wait(run, 60)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output["text"] == "the whole answer, from the top"
    assert len(model_server.requests) == 2
    assert Execution.objects.filter(key="before:Stream?").count() == 1  # the tool ran once
    step = Step.objects.get(run=run, kind="llm")
    assert (step.attempts, step.output_tokens) == (2, 6)


def test_a_loop_runs_parallel_calls_as_a_fan_out_and_reports_denials_to_the_model(
    model_workers, model_server
):
    Policy.objects.create(name="no forbidden", tool="tests.forbidden_tool", effect="deny")
    model_server.script(
        Reply(
            tool_calls=[
                ToolCall("tests__lookup", {"city": "Paris"}),
                ToolCall("tests__lookup", {"city": "Oslo"}),
            ]
        ),
        Reply(
            tool_calls=[
                ToolCall("tests__forbidden_tool", {"target": "db"}),
                ToolCall("nope", {}),
                ToolCall("tests__lookup", {"town": "Rome"}),
            ]
        ),
        Reply("Paris 5, Oslo 4."),
    )
    model_workers()
    run = agentflow.wait(agentflow.start("tests.tool_loop", {"question": "Weather?"}), 90)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output == {"text": "Paris 5, Oslo 4.", "finish_reason": "stop"}
    parents = Step.objects.filter(run=run, index__isnull=True).order_by("position")
    assert [s.kind for s in parents] == ["llm", "parallel", "llm", "parallel", "llm"]
    assert Step.objects.filter(run=run, position=1, index__isnull=False).count() == 2
    assert Execution.objects.filter(key__in=["lookup:Paris", "lookup:Oslo"]).count() == 2
    assert not Execution.objects.filter(key__startswith="forbidden:").exists()
    # What the model read back, in the order it called.
    tool_messages = [m for m in model_server.requests[2]["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages[:2]] == [
        '{"city": "Paris", "temperature": 5}',
        '{"city": "Oslo", "temperature": 4}',
    ]
    denied, unknown, bad_args = (m["content"] for m in tool_messages[2:])
    assert denied.startswith("error: ") and "tests.forbidden_tool" in denied
    assert "no tool named 'nope'" in unknown
    assert "ToolArgumentError" in bad_args and "town" in bad_args
    assert agentflow.replay(run).ok


def test_a_loop_ends_at_max_turns(model_workers, model_server):
    model_server.handler = lambda body: Reply(
        tool_calls=[ToolCall("tests__lookup", {"city": "Rome"})]
    )
    model_workers()
    run = agentflow.wait(
        agentflow.start("tests.tool_loop", {"question": "Forever?", "max_turns": 3}), 60
    )
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output["finish_reason"] == "tool_calls"
    assert len(model_server.requests) == 3
    # The last turn's calls are not run: nobody would read their results.
    assert Execution.objects.filter(key="lookup:Rome").count() == 2


def test_a_token_budget_pauses_the_loop_between_turns_until_it_is_raised(
    model_workers, model_server
):
    lookup = Reply(tool_calls=[ToolCall("tests__lookup", {"city": "Rome"})], usage=(10, 20))
    model_server.script(lookup, lookup, Reply("Warm.", usage=(10, 20)))
    model_workers()
    # Each turn reserves max_tokens=32 and settles the 20 the server reports: the third
    # turn's reservation (40 + 32) does not fit in 70.
    run = agentflow.start(
        "tests.tool_loop",
        {"question": "Rome?", "max_tokens": 32},
        budget={"max_output_tokens": 70},
    )
    run = agentflow.wait(run, 60)
    assert run.status == Run.Status.PAUSED, run.error
    assert "output tokens spent 40 of 70" in run.wait_reason
    assert len(model_server.requests) == 2
    budget = Budget.objects.get(run=run)
    assert BudgetSpend.objects.get(budget=budget).output_tokens == 40  # settled, not reserved

    budget.max_output_tokens = 200
    budget.save()
    agentflow.resume(run)
    run = agentflow.wait(run, 60)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output["text"] == "Warm."
    assert BudgetSpend.objects.get(budget=budget).output_tokens == 60
    steps = Step.objects.filter(run=run, kind="llm")
    assert sorted(s.output_tokens for s in steps) == [20, 20, 20]


def test_an_anthropic_alias_is_a_model_step_like_any_other(workers):
    with AnthropicServer() as claude:
        claude.script(Reply("Bonjour.", usage=(12, 3)))
        workers("w1", env={"AGENTFLOW_TEST_ANTHROPIC_URL": claude.base_url})
        run = agentflow.start("tests.ask_model", {"question": "Salut?", "model": "claude"})
        run = agentflow.wait(run, 60)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output["text"] == "Bonjour." and run.output["usage"] == [12, 3]
    step = Step.objects.get(run=run, kind="llm")
    assert (step.name, step.input_tokens, step.output_tokens) == ("claude", 12, 3)
    assert claude.requests[0]["max_tokens"] == 64


def test_tokens_stream_live_as_coalesced_redacted_deltas(model_workers, model_server):
    from agentflow.events import run_group

    secret = "sk-live-4f9a8b7c6d5e4f3a2b1c"
    words = [f"word{i} " for i in range(40)] + [f"key {secret} ", "end."]
    model_server.script(Reply(chunks=words, chunk_delay=0.01, usage=(3, 42)))
    run = agentflow.start("tests.ask_model", {"question": "Talk?"})
    listener = GroupListener(run_group(run.id))
    model_workers()
    run = agentflow.wait(run, 60)
    assert run.status == Run.Status.SUCCEEDED, run.error
    deltas = [e for m in listener.drain() if m["type"] == "agentflow.deltas" for e in m["events"]]
    position = Step.objects.get(run=run, kind="llm").position
    assert {(e["seq"], e["event"], e["data"]["position"]) for e in deltas} == {
        (None, "llm.delta", position)
    }
    streamed = "".join(e["data"]["text"] for e in deltas)
    assert streamed == "".join(words).replace(secret, "[redacted]")
    assert 1 < len(deltas) < len(words)  # coalesced, yet live
    assert secret not in run.output["text"]
    assert not run.events.filter(type="llm.delta").exists()  # ephemeral: never stored


def test_status_shows_the_tokens_and_cost_of_model_calls(model_workers, model_server):
    from io import StringIO

    from django.core.management import call_command

    model_server.script(Reply("Yes.", usage=(1000, 250)))
    model_workers()
    run = agentflow.wait(agentflow.start("tests.ask_model", {"question": "Cost?"}), 60)
    assert run.status == Run.Status.SUCCEEDED, run.error
    out = StringIO()
    call_command("agentflow", "status", str(run.id), stdout=out)
    text = out.getvalue()
    assert "tokens  1000 in, 250 out  cost $0.004" in text  # 1000 x $2 + 250 x $8 per million
    assert "llm default (succeeded)  attempts=1  tokens=1000/250 cost=$0.004000" in text


def test_cancelling_a_loop_mid_call_stops_it_there(model_workers, model_server):
    held = threading.Event()
    model_server.handler = lambda body: Reply(
        tool_calls=[ToolCall("tests__lookup", {"city": "Rome"})], hold=held
    )
    model_workers()
    run = agentflow.start("tests.tool_loop", {"question": "Forever?", "max_turns": 10})
    assert model_server.streaming.wait(60), "the model call never started streaming"
    agentflow.cancel(run)
    held.set()
    run = agentflow.wait(run, 60)
    assert run.status == Run.Status.CANCELLED
    assert len(model_server.requests) == 1  # no tool ran, and the model was not asked again
    assert not Execution.objects.filter(key="lookup:Rome").exists()

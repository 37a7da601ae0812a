"""OpenTelemetry: spans for starts, advances, steps, tool and model calls, across Celery.

The test process exports to the SDK's in-memory exporter; workers write their spans to a
file (``tests/otel_worker.py``), so a trace can be followed from ``agentflow.start``
into the worker that advanced the run and the ones that ran its fan-out.
"""

from __future__ import annotations

import subprocess
import sys
from functools import cache

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import agentflow
from agentflow import _tracing as tracing
from agentflow._engine import executor
from agentflow.models import Run
from tests.openai_server import OpenAIServer, Reply
from tests.otel_worker import ENV, read_spans
from tests.support import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@cache
def _exporter() -> InMemorySpanExporter:
    """The test process's exporter: a global tracer provider can be set once per process."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


@pytest.fixture
def spans() -> InMemorySpanExporter:
    exporter = _exporter()
    exporter.clear()
    yield exporter
    exporter.clear()


def by_name(finished, name: str) -> list:
    return [span for span in finished if span.name == name]


def hex_id(value: int, digits: int) -> str:
    return f"0x{value:0{digits}x}"


def test_an_advance_traces_its_steps_and_tool_calls_with_run_and_position(
    recording_dispatcher, spans
):
    run = agentflow.start("tests.traced", {"n": 0})
    assert executor.advance(run.id, worker="t") == "succeeded"
    finished = spans.get_finished_spans()
    [start] = by_name(finished, "agentflow.start")
    assert dict(start.attributes) == {
        "agentflow.run_id": str(run.id),
        "agentflow.agent": "tests.traced",
    }
    [advance] = by_name(finished, "agentflow.advance")
    assert dict(advance.attributes) == {
        "agentflow.run_id": str(run.id),
        "agentflow.agent": "tests.traced",
        "agentflow.outcome": "succeeded",
    }
    [step] = by_name(finished, "agentflow.step")
    assert dict(step.attributes) == {
        "agentflow.run_id": str(run.id),
        "agentflow.position": 0,
        "agentflow.step": "tests.testapp.agents.square",
    }
    [call] = by_name(finished, "agentflow.tool")
    assert dict(call.attributes) == {
        "agentflow.run_id": str(run.id),
        "agentflow.position": 1,
        "agentflow.tool": "tests.record_effect",
        "agentflow.attempt": 1,
    }
    assert step.parent.span_id == call.parent.span_id == advance.context.span_id


def test_a_failed_attempt_marks_its_span_as_an_error(recording_dispatcher, spans):
    run = agentflow.start("tests.retries", {})
    for _ in range(50):
        if executor.advance(run.id, worker="t") in ("succeeded", "failed"):
            break
        run.refresh_from_db()
        # Skip the backoff: the attempt's wake-up time is what the test does not wait for.
        run.steps.filter(status="scheduled").update(wake_at=run.created_at)
    failures = [
        span
        for span in spans.get_finished_spans()
        if span.name == "agentflow.tool" and span.attributes["agentflow.tool"] == "tests.flaky"
    ]
    assert [span.attributes["agentflow.attempt"] for span in failures] == [1, 2, 3]
    assert [span.status.status_code for span in failures] == [
        trace.StatusCode.ERROR,
        trace.StatusCode.ERROR,
        trace.StatusCode.UNSET,
    ]
    assert failures[0].events[0].name == "exception"


def test_the_trace_context_crosses_a_message_as_its_headers(spans):
    with tracing.span("request") as request:
        headers = tracing.carrier()
    assert set(headers) >= {"traceparent"}

    class Request(dict):
        """What a Celery task sees: its message's custom headers as request fields."""

    with tracing.continued(Request(headers)), tracing.span("agentflow.advance") as advance:
        pass
    assert advance.context.trace_id == request.get_span_context().trace_id
    assert advance.parent.span_id == request.get_span_context().span_id
    with tracing.continued(Request()), tracing.span("agentflow.advance") as alone:
        pass
    assert alone.context.trace_id != request.get_span_context().trace_id


NO_OTEL = """
import sys
sys.modules["opentelemetry"] = None  # as if the extra were not installed
from agentflow import _tracing as tracing
assert not tracing.enabled()
with tracing.span("agentflow.step", {"agentflow.position": 1}) as span:
    tracing.annotate(span, {"agentflow.outcome": "x"})
    tracing.failed(tracing.current(), ValueError("no"))
assert span is None and tracing.carrier() == {}
with tracing.continued({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}):
    pass
print("no-op")
"""

API_ONLY = """
from agentflow import _tracing as tracing
assert tracing.enabled() and not tracing.configured()
with tracing.span("agentflow.step") as span:
    assert tracing.carrier() == {}  # nothing to propagate without an SDK
assert span is None  # skipped, not made: no cost on the hot path
print("no-op")
"""


@pytest.mark.parametrize("program", [NO_OTEL, API_ONLY], ids=["no-opentelemetry", "api-only"])
def test_without_an_sdk_tracing_is_a_no_op(program):
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no-op"


def test_a_run_is_one_trace_from_start_through_the_workers_fan_out_and_model_call(
    workers, spans, tmp_path
):
    path = tmp_path / "spans.jsonl"
    with OpenAIServer() as server:
        server.script(Reply("Traced.", usage=(11, 2)))
        workers(env={ENV: str(path), "AGENTFLOW_TEST_OPENAI_URL": server.base_url})
        with tracing.span("request") as request:
            fanned = agentflow.start("tests.traced", {"n": 3})
            asked = agentflow.start("tests.ask_model", {"question": "Trace?"})
        for run in (fanned, asked):
            done = agentflow.wait(run, 60)
            assert done.status == Run.Status.SUCCEEDED, done.error
    trace_id = hex_id(request.get_span_context().trace_id, 32)
    starts = {
        span.attributes["agentflow.run_id"]: hex_id(span.context.span_id, 16)
        for span in by_name(spans.get_finished_spans(), "agentflow.start")
    }

    def settled() -> list[dict]:
        # The last span of each run (its final advance) is written once it ends.
        found = read_spans(path)
        outcomes = [
            s["attributes"].get("agentflow.outcome")
            for s in found
            if s["name"] == "agentflow.advance"
        ]
        return found if outcomes.count("succeeded") == 2 else []

    found = wait_until(settled, timeout=30, what="both runs' final advance spans")
    mine = [span for span in found if span["context"]["trace_id"] == trace_id]
    names = sorted(span["name"] for span in mine)
    assert names.count("agentflow.tool") == 2 + 3 + 0  # two record_effect calls, 3 children
    assert names.count("agentflow.llm") == 1
    assert names.count("agentflow.step") == 1
    assert not [span for span in found if span not in mine and span["name"] != "agentflow.advance"]
    first_advances = {}
    for span in mine:
        if span["name"] == "agentflow.advance":
            first_advances.setdefault(span["attributes"]["agentflow.run_id"], span)
    for run in (fanned, asked):
        # The worker's first advance is a child of the start span in this process.
        assert first_advances[str(run.id)]["parent_id"] == starts[str(run.id)]
    children = [
        span
        for span in mine
        if span["name"] == "agentflow.tool" and "agentflow.index" in span["attributes"]
    ]
    assert sorted(span["attributes"]["agentflow.index"] for span in children) == [0, 1, 2]
    assert {span["attributes"]["agentflow.run_id"] for span in children} == {str(fanned.id)}
    [model] = [span for span in mine if span["name"] == "agentflow.llm"]
    assert model["attributes"]["agentflow.tool"] == "llm:default"
    assert model["attributes"]["gen_ai.usage.input_tokens"] == 11
    assert model["attributes"]["gen_ai.usage.output_tokens"] == 2

"""RunContext operations whose results must survive replay: now, random, uuid, emit, patched."""

from __future__ import annotations

import pytest

import agentflow
from agentflow._engine import executor
from agentflow.models import Event, Run, Step
from tests.testapp import agents as test_agents

pytestmark = pytest.mark.django_db(transaction=True)


def advance(run: Run) -> str:
    return executor.advance(run.id, worker="test")


def test_now_random_uuid_are_recorded_and_identical_on_resume(recording_dispatcher):
    run = agentflow.start("tests.recorded", {})
    assert advance(run) == "waiting"
    recorded = {
        s.kind: s.output for s in Step.objects.filter(run=run, kind__in=["now", "random", "uuid"])
    }
    agentflow.signal(run, "go")
    assert advance(run) == "succeeded"  # replays from the top, reading the recorded values
    run.refresh_from_db()
    assert run.output["random"] == recorded["random"]
    assert run.output["uuid"] == recorded["uuid"]
    assert run.output["now"].startswith(recorded["now"][:19])
    assert agentflow.replay(run).ok


def test_emit_writes_one_event_even_when_replayed(recording_dispatcher):
    run = agentflow.start("tests.recorded", {})
    advance(run)
    agentflow.signal(run, "go")
    advance(run)
    progress = Event.objects.filter(run=run, type="progress")
    assert progress.count() == 1
    assert progress.get().data == {"position": 3, "data": {"stage": "values drawn"}}


def test_emit_refuses_agentflow_event_types(recording_dispatcher, monkeypatch):
    def spoof(ctx):
        ctx.emit("run.succeeded", {})

    monkeypatch.setattr(test_agents.recorded, "fn", spoof)
    run = agentflow.start("tests.recorded", {})
    assert advance(run) == "failed"
    run.refresh_from_db()
    assert "must be a non-empty string not starting with run." in run.error["message"]


def test_patched_keeps_old_history_on_the_old_path(recording_dispatcher, monkeypatch):
    old = agentflow.start("tests.patchy", {})
    assert advance(old) == "waiting"  # recorded: step_a, wait

    monkeypatch.setattr(test_agents, "ADD_B", True)  # deploy the change
    new = agentflow.start("tests.patchy", {})
    assert advance(new) == "waiting"
    for run in (old, new):
        agentflow.signal(run, "go")
        assert advance(run) == "succeeded"
    old.refresh_from_db()
    new.refresh_from_db()
    assert old.output == ["a"]  # reached the change on old history: patched() was False
    assert new.output == ["a", "b"]  # started on new code: patched() was True
    assert list(Step.objects.filter(run=new).values_list("kind", flat=True)) == [
        "step",
        "patch",
        "step",
        "wait",
    ]
    assert agentflow.replay(old).ok and agentflow.replay(new).ok


def test_ctx_calls_cannot_nest_inside_a_step(recording_dispatcher, monkeypatch):
    def nested(ctx):
        return ctx.step(lambda: ctx.now())

    monkeypatch.setattr(test_agents.recorded, "fn", nested)
    run = agentflow.start("tests.recorded", {})
    assert advance(run) == "failed"
    run.refresh_from_db()
    assert "ctx calls cannot be nested" in run.error["message"]

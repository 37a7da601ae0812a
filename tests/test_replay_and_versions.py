"""Replay against changed code, and runs pinned to an agent version."""

from __future__ import annotations

import pytest

import agentflow
from agentflow.models import Run, Step
from tests.support import wait_until
from tests.testapp import agents as test_agents
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def finished_variant_run(workers):
    workers("w1", concurrency=1)
    run = agentflow.start("tests.variant", {})
    agentflow.signal(run, "continue")
    run = agentflow.wait(run)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output == "ab"
    return run


def test_replay_on_unchanged_code_is_ok(finished_variant_run):
    executions = Execution.objects.count()
    report = agentflow.replay(finished_variant_run)
    assert report.ok, str(report)
    assert report.mismatches == []
    assert report.steps_replayed == 3
    assert Execution.objects.count() == executions  # no side effect ran


def test_replay_on_changed_code_lists_the_mismatch(finished_variant_run, monkeypatch):
    monkeypatch.setattr(test_agents, "VARIANT", "b")
    executions = Execution.objects.count()
    report = agentflow.replay(finished_variant_run.id)
    assert not report.ok
    assert len(report.mismatches) == 1
    mismatch = report.mismatches[0]
    assert mismatch.position == 0
    assert "history has step 'tests.testapp.agents.step_a'" in mismatch.message
    assert "asks for call 'tests.record_effect'" in mismatch.message
    assert "1 mismatch" in str(report)
    assert Execution.objects.count() == executions


def test_replay_reports_a_changed_result(finished_variant_run, monkeypatch):
    original = test_agents.variant.fn

    def returns_more(ctx):
        return original(ctx) + "!"

    monkeypatch.setattr(test_agents.variant, "fn", returns_more)
    report = agentflow.replay(finished_variant_run)
    assert [m.position for m in report.mismatches] == [None]
    assert "returns 'ab!'" in report.mismatches[0].message


def test_run_pinned_to_an_undeployed_version_waits_with_a_clear_error(workers):
    from agentflow.tasks import advance

    run = Run.objects.create(agent="tests.mixed", agent_version="0", input={"n": 2})
    new_only = workers("new-only", concurrency=1, beat=True)
    advance.delay(str(run.id))
    waiting = wait_until(
        lambda: Run.objects.filter(id=run.id, status=Run.Status.WAITING).first(),
        timeout=30,
        what="the run to wait for its version",
    )
    assert "Agent 'tests.mixed' version 0 is not deployed here" in waiting.wait_reason
    assert "deployed versions: 1" in waiting.wait_reason
    assert not Step.objects.filter(run=run).exists()  # version 1's code never ran on it

    # Redeploy with version 0 kept registered: the run resumes on its own version.
    new_only.stop()
    workers("old-and-new", concurrency=1, beat=True, env={"AGENTFLOW_TEST_DEPLOY_V0": "1"})
    run = agentflow.wait(run, timeout=30)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output == {"v0": [0, 1]}


def test_new_runs_start_on_the_newest_version():
    run = agentflow.start("tests.mixed", {"n": 1})
    assert run.agent_version == "1"

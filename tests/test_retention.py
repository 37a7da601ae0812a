"""``agentflow prune``: old finished runs go with their steps, events and approvals."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

import agentflow
from agentflow import _retention as retention
from agentflow._engine import executor
from agentflow.models import Approval, Budget, Event, Run, Step

pytestmark = pytest.mark.django_db(transaction=True)


def finished_run(days_ago: float, **fields) -> Run:
    """A 3-step run that really ran, then dated back."""
    run = agentflow.start("tests.three_steps", budget={"max_steps": 10})
    assert executor.advance(run.id, worker="t") == "succeeded"
    Run.objects.filter(id=run.id).update(
        finished_at=timezone.now() - timedelta(days=days_ago), **fields
    )
    return Run.objects.get(id=run.id)


def prune(*args: str) -> str:
    out = StringIO()
    call_command("agentflow", "prune", *args, stdout=out)
    return out.getvalue()


def test_prune_deletes_old_finished_runs_whole_and_keeps_the_rest(recording_dispatcher):
    old = [finished_run(40) for _ in range(5)]
    recent = finished_run(3)
    active = finished_run(40, status=Run.Status.WAITING)
    parent = finished_run(40)
    fork = agentflow.fork(parent, at=1)
    Approval.objects.create(run=old[0], position=0, title="goes with its run", request={})
    steps_per_run = Step.objects.filter(run=old[0]).count()
    assert steps_per_run == 3

    dry = prune("--older-than", "30d", "--dry-run")
    assert f"would delete 5 runs, {5 * steps_per_run} steps" in dry
    assert "1 approvals; 1 old runs kept because a fork references them" in dry
    assert Run.objects.count() == 9  # a dry run deletes nothing

    out = prune("--older-than", "30d", "--batch", "2")
    assert out.count("  deleted ") == 3  # progress after each batch of 2, 2 and 1
    assert "deleted 5 runs, 15 steps" in out
    left = set(Run.objects.values_list("id", flat=True))
    assert left == {recent.id, active.id, parent.id, fork.id}
    gone = [run.id for run in old]
    for model in (Step, Event, Approval, Budget):
        assert not model.objects.filter(run_id__in=gone).exists(), model.__name__
    assert Step.objects.filter(run=recent).count() == 3  # the kept runs keep everything

    Run.objects.filter(id=fork.id).delete()  # once no fork references it, it goes too
    assert "deleted 1 runs" in prune("--older-than", "30d")
    assert not Run.objects.filter(id=parent.id).exists()


@pytest.mark.parametrize("age", ["30", "thirty days", "3y", "-1d"])
def test_an_age_that_is_not_one_is_refused_with_the_form_it_takes(age):
    with pytest.raises(CommandError, match=r"write a whole number and a unit, e\.g\. 30d"):
        prune(f"--older-than={age}")


def test_ages_in_every_unit():
    assert retention.parse_age("90m") == timedelta(minutes=90)
    assert retention.parse_age("2w") == timedelta(days=14)
    assert retention.parse_age(" 12h ") == timedelta(hours=12)


def test_with_retention_set_beat_prunes_daily(settings, recording_dispatcher):
    from agentflow.beat import beat_schedule
    from agentflow.tasks import prune as prune_task

    assert "agentflow.prune" not in beat_schedule()
    assert prune_task() is None  # no RETENTION: nothing is ever deleted
    settings.AGENTFLOW = {**settings.AGENTFLOW, "RETENTION": "30d"}
    entry = beat_schedule()["agentflow.prune"]
    assert (entry["task"], entry["schedule"]) == ("agentflow.prune", 24 * 3600.0)
    old, recent = finished_run(31), finished_run(1)
    assert prune_task().startswith("1 runs, 3 steps")
    assert list(Run.objects.values_list("id", flat=True)) == [recent.id]
    assert not Run.objects.filter(id=old.id).exists()


def test_a_run_retried_or_forked_between_pick_and_delete_is_kept_whole(
    recording_dispatcher, monkeypatch
):
    failed = finished_run(40, status=Run.Status.FAILED, error={"message": "the API was down"})
    parent = finished_run(40)
    doomed = finished_run(40)
    pick = retention._pick
    forks = []

    def pick_then_act(before, batch):
        """The prune's pick, then what an operator does before its delete."""
        ids = pick(before, batch)
        if failed.id in ids:
            assert {failed.id, parent.id, doomed.id} <= set(ids)
            agentflow.resume(failed, by="operator")  # a retry: the run goes on
            forks.append(agentflow.fork(parent, at=1))
        return ids

    monkeypatch.setattr(retention, "_pick", pick_then_act)
    report = retention.prune(timedelta(days=30))

    assert forks and report.runs == 1 and report.steps == 3
    assert not Run.objects.filter(id=doomed.id).exists()
    retried = Run.objects.get(id=failed.id)
    assert retried.status == Run.Status.WAITING and retried.finished_at is None
    assert Event.objects.filter(run=retried, type="run.resumed").exists()  # its new event
    assert Step.objects.filter(run=retried).count() == 3
    assert Budget.objects.filter(run=retried).exists()
    assert Run.objects.get(id=forks[0].id).parent_id == parent.id  # the fork keeps its history
    assert Step.objects.filter(run=parent).count() == 3
    assert executor.advance(retried.id, worker="t") == "succeeded"  # and it runs to the end

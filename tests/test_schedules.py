"""Schedules: agentflow.schedule writes a PeriodicTask; each tick starts exactly one run.

The tick tests run a real Celery worker, and a real ``celery beat`` with django-celery-beat's
DatabaseScheduler reading the test database.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

import agentflow
from agentflow import schedules
from agentflow.models import Run
from agentflow.tasks import start_scheduled
from tests.conftest import ROOT
from tests.support import wait_until

SECRET = "sk-" + "a1B2" * 6


@pytest.mark.django_db
def test_schedule_writes_a_periodic_task_that_starts_the_agent(django_user_model):
    owner = django_user_model.objects.create(username="scheduler")
    task = agentflow.schedule(
        "tests.tt_scheduled", {"label": SECRET}, every=30, owner=owner, budget={"max_steps": 9}
    )

    assert isinstance(task, PeriodicTask)
    assert (task.name, task.task, task.enabled) == (
        "tests.tt_scheduled every 30s",
        "agentflow.start_scheduled",
        True,
    )
    assert (task.interval.every, task.interval.period, task.crontab) == (30, "seconds", None)
    kwargs = json.loads(task.kwargs)
    assert kwargs["schedule"] == task.id and kwargs["agent"] == "tests.tt_scheduled"
    assert (kwargs["owner"], kwargs["budget"]) == (owner.pk, {"max_steps": 9})
    # Stored redacted, like a run's input; the real value only sealed.
    assert SECRET not in task.kwargs and kwargs["sealed_input"]

    cron = agentflow.schedule("tests.tt_scheduled", {"label": "x"}, crontab="0 9 * * 1-5",
                              enabled=False)  # fmt: skip
    assert cron.name == "tests.tt_scheduled at '0 9 * * 1-5'" and not cron.enabled
    assert (cron.crontab.minute, cron.crontab.hour, cron.crontab.day_of_week) == ("0", "9", "1-5")
    assert cron.interval is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({}, "exactly one of every= .* or crontab= .*; got neither"),
        ({"every": 5, "crontab": "* * * * *"}, "got both"),
        ({"every": 0}, "every=0 must be a whole number of seconds"),
        ({"every": 1.5}, "every=1.5 must be a whole number"),
        ({"crontab": "0 9 * *"}, "must have 5 fields"),
        ({"crontab": "61 * * * *"}, "crontab='61 \\* \\* \\* \\*' is not valid"),
        ({"every": 5, "input": {"nope": 1}}, "Input for agent 'tests.tt_scheduled'"),
        ({"every": 5, "budget": {"max_money": 1}}, "unknown limit"),
        # What a red-team probe sent (issue 20): each named, with what is allowed.
        ({"every": 2**31}, "every=2147483648 must be .* at most 2,147,483,647"),
        ({"every": 99_999_999_999}, "every=99999999999 must be .* at most 2,147,483,647"),
        ({"every": 10**5_000}, "every=<an integer of 16,610 bits> must be a whole number"),
        ({"every": 5, "name": "a\x00b"}, r"name='a\\x00b' holds a NUL character"),
        ({"every": 5, "name": "n" * 201}, "name='nnn.* is 201 characters long, over .* of 200"),
        (
            {"crontab": "* * * * " + "1," * 5_000 + "1"},
            r"the day_of_week field of crontab='\* \* \* \* 1,1.*\(9811 more\) is 10,001 "
            "characters long; it holds at most 64",
        ),
        (
            {"crontab": ",".join(map(str, range(60))) + " * * * *"},
            "the name made from the agent and its timing, .* is 201 characters long, over the "
            "limit of 200; pass a shorter name=",
        ),
        ({"every": 5, "owner": "admin"}, "owner='admin' must be a saved auth.User or None"),
    ],
)
def test_schedule_refuses_what_cannot_run(arguments, problem):
    rows = (IntervalSchedule.objects.count(), CrontabSchedule.objects.count())
    arguments = {"input": {"label": "x"}, **arguments}
    with pytest.raises(agentflow.InvalidInput, match=problem) as refused:
        agentflow.schedule("tests.tt_scheduled", arguments.pop("input"), **arguments)
    assert len(str(refused.value)) < 1_000  # a bad value is shown cut short
    assert not PeriodicTask.objects.filter(task=schedules.TASK).exists()
    assert (IntervalSchedule.objects.count(), CrontabSchedule.objects.count()) == rows


@pytest.mark.django_db
def test_schedule_refuses_an_unknown_agent_and_a_taken_name():
    with pytest.raises(agentflow.UnknownAgent):
        agentflow.schedule("tests.no_such_agent", every=5)
    agentflow.schedule("tests.tt_scheduled", {"label": "x"}, every=5, name="nightly")
    with pytest.raises(agentflow.InvalidInput, match="'nightly' already exists"):
        agentflow.schedule("tests.tt_scheduled", {"label": "y"}, every=9, name="nightly")
    assert PeriodicTask.objects.filter(task=schedules.TASK).count() == 1


@pytest.mark.django_db
def test_the_fire_time_is_the_publish_time_floored_to_the_tick():
    minutely = agentflow.schedule("tests.tt_scheduled", {"label": "x"}, every=60)
    cron = agentflow.schedule("tests.tt_scheduled", {"label": "x"}, crontab="*/5 * * * *")

    def fired(task: PeriodicTask, stamp: str) -> str:
        return schedules.fire_time(task, stamp).isoformat()

    assert fired(minutely, "2026-01-01T12:00:00.4+00:00") == "2026-01-01T12:00:00+00:00"
    assert fired(minutely, "2026-01-01T12:00:59.9+00:00") == "2026-01-01T12:00:00+00:00"
    assert fired(minutely, "2026-01-01T12:01:00+00:00") == "2026-01-01T12:01:00+00:00"
    assert fired(cron, "2026-01-01T12:05:07+00:00") == "2026-01-01T12:05:00+00:00"
    key = schedules.idempotency_key(minutely, datetime(2026, 1, 1, 12, tzinfo=UTC))
    assert key == f"schedule:{minutely.id}:2026-01-01T12:00:00+00:00"


@pytest.mark.django_db
def test_a_doubled_tick_starts_one_run_through_agentflows_key(recording_dispatcher):
    task = agentflow.schedule("tests.tt_scheduled", {"label": "x"}, every=60)
    kwargs = {k: v for k, v in json.loads(task.kwargs).items() if k != "schedule"}

    def tick(stamp: str) -> Run:
        return schedules.start_tick(task.id, stamped=stamp, **kwargs)

    # Two beats (or a restarted one) sent the 12:00 tick at different instants; then 12:01.
    first, again = tick("2026-01-01T12:00:00.2+00:00"), tick("2026-01-01T12:00:59.9+00:00")
    later = tick("2026-01-01T12:01:00.1+00:00")

    assert first.id == again.id != later.id
    assert [run.id for run in schedules.runs_of(task)] == [later.id, first.id]
    assert first.idempotency_key == f"schedule:{task.id}:2026-01-01T12:00:00+00:00"
    assert len(recording_dispatcher) == 2  # one wake-up per run: the repeat sent none


@pytest.mark.django_db
def test_a_schedule_names_agentflows_queue_and_follows_it_when_it_changes(settings):
    default = agentflow.schedule("tests.tt_scheduled", {"label": "x"}, every=30)
    assert PeriodicTask.objects.get(id=default.id).queue is None  # Celery's default queue

    settings.AGENTFLOW = {**settings.AGENTFLOW, "QUEUE": "agents"}
    queued = agentflow.schedule("tests.tt_scheduled", {"label": "x"}, every=60)
    assert PeriodicTask.objects.get(id=queued.id).queue == "agents"

    # A row written before the setting changed is moved; other periodic tasks are not.
    other = PeriodicTask.objects.create(
        name="someone else's", task="other.task", interval=queued.interval, queue="theirs"
    )
    assert schedules.sync_queues() == 1
    assert schedules.sync_queues() == 0
    rows = dict(PeriodicTask.objects.values_list("id", "queue"))
    assert (rows[default.id], rows[queued.id], rows[other.id]) == ("agents", "agents", "theirs")

    settings.AGENTFLOW = {**settings.AGENTFLOW, "QUEUE": None}
    assert schedules.sync_queues() == 2
    rows = dict(PeriodicTask.objects.values_list("id", "queue"))
    assert (rows[default.id], rows[queued.id], rows[other.id]) == (None, None, "theirs")


def _started(worker, task_ids: list[str]) -> dict[str, str]:
    """task id -> the run id it returned, from the worker's log (tasks keep no results)."""
    pattern = r"agentflow\.start_scheduled\[([0-9a-f-]+)\] succeeded .*?'([0-9a-f-]+)'"
    found = dict(re.findall(pattern, worker.log()))
    return {task_id: found[task_id] for task_id in task_ids if task_id in found}


def test_two_deliveries_of_one_tick_make_one_run(workers, django_user_model):
    worker = workers("w1")
    owner = django_user_model.objects.create(username="scheduler")
    task = agentflow.schedule(
        "tests.tt_scheduled", {"label": SECRET}, every=60, owner=owner, budget={"max_steps": 9}
    )
    kwargs = json.loads(task.kwargs)

    def deliver(stamp: str) -> str:
        headers = {schedules.FIRE_TIME_HEADER: stamp}
        return start_scheduled.apply_async(kwargs=kwargs, headers=headers).id

    # Two beats sent the 12:00 tick (or one message came twice), then the 12:01 tick.
    sent = [deliver("2026-01-01T12:00:01+00:00"), deliver("2026-01-01T12:00:02.5+00:00")]
    sent.append(deliver("2026-01-01T12:01:00.2+00:00"))
    wait_until(
        lambda: len(_started(worker, sent)) == 3, timeout=60, what="three deliveries handled"
    )
    started = _started(worker, sent)

    assert started[sent[0]] == started[sent[1]] != started[sent[2]]
    runs = list(schedules.runs_of(task))
    assert [str(run.id) for run in runs] == [started[sent[2]], started[sent[0]]]
    assert [run.idempotency_key for run in runs] == [
        f"schedule:{task.id}:2026-01-01T12:01:00+00:00",
        f"schedule:{task.id}:2026-01-01T12:00:00+00:00",
    ]
    for run in runs:
        run = agentflow.wait(run, timeout=60)
        assert run.status == Run.Status.SUCCEEDED and run.output == "a" + SECRET
        assert run.owner_id == owner.pk and run.budgets.get().max_steps == 9


@pytest.fixture
def database_beat(tmp_path):
    """Start ``celery beat`` with the DatabaseScheduler on the test database."""
    started: list[subprocess.Popen] = []

    def start(env: dict | None = None) -> subprocess.Popen:
        log = open(tmp_path / "beat.log", "w")  # noqa: SIM115 (the process writes it)
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "apps.project", "beat", "-l", "INFO",
             "-S", "django_celery_beat.schedulers:DatabaseScheduler"],
            cwd=ROOT,
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings",
                 "AGENTFLOW_TEST_WORKER": "1", **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def test_a_schedule_starts_runs_on_a_real_beat(workers, database_beat, tmp_path):
    workers("w1")
    task = agentflow.schedule("tests.tt_scheduled", {"label": "-beat"}, every=1)
    beat = database_beat()

    wait_until(
        lambda: schedules.runs_of(task).count() >= 3, timeout=60, what="beat to start 3 runs"
    )
    runs = list(schedules.runs_of(task))
    assert beat.poll() is None, (tmp_path / "beat.log").read_text()[-3000:]

    keys = [run.idempotency_key for run in runs]
    assert all(key.startswith(f"schedule:{task.id}:") for key in keys)
    fired = [datetime.fromisoformat(key.split(":", 2)[2]) for key in keys]
    assert fired == sorted(fired, reverse=True)  # newest first
    # Each run is keyed by the tick beat published it in: the stamp floored to the 1s tick,
    # at or just before the run was made (a key of the raw stamp, or of a later clock, would
    # not dedupe a doubled tick; the unique constraint alone cannot show that).
    for run, at in zip(runs, fired, strict=True):
        assert at.microsecond == 0, run.idempotency_key
        assert at <= run.created_at < at + timedelta(seconds=30), (at, run.created_at)
    for run in runs:
        assert agentflow.wait(run, timeout=60).output == "a-beat"


@pytest.mark.django_db(transaction=True)
def test_a_schedule_made_in_the_admin_form_starts_runs_on_a_real_beat(
    workers, database_beat, admin_client
):
    from django.urls import reverse

    workers("w1")
    response = admin_client.post(
        reverse("admin:agentflow_run_schedule_add"),
        {"agent": "tests.tt_scheduled", "input": '{"label": "-form"}', "every": "1"}
        | {"enabled": "on"},
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    task = PeriodicTask.objects.get(task="agentflow.start_scheduled")
    database_beat()

    wait_until(
        lambda: schedules.runs_of(task).count() >= 2, timeout=60, what="beat to start 2 runs"
    )
    for run in schedules.runs_of(task)[:2]:
        assert agentflow.wait(run, timeout=60).output == "a-form"


def test_scheduled_runs_start_on_agentflows_queue_alone(workers, database_beat, settings, tmp_path):
    # Only a worker on agentflow's queue: a tick sent to Celery's default queue never runs.
    own = {"AGENTFLOW_TEST_QUEUE": "agents"}
    workers("w1", env=own, queues="agents")
    before = agentflow.schedule("tests.tt_scheduled", {"label": "-before"}, every=1, name="before")
    settings.AGENTFLOW = {**settings.AGENTFLOW, "QUEUE": "agents"}
    after = agentflow.schedule("tests.tt_scheduled", {"label": "-after"}, every=1, name="after")
    beat = database_beat(env=own)

    for task in (before, after):
        wait_until(
            lambda task=task: schedules.runs_of(task).count() >= 2,
            timeout=60,
            what=f"beat to start 2 runs of {task.name} on queue agents",
        )
        run = agentflow.wait(schedules.runs_of(task)[1], timeout=60)
        assert run.status == Run.Status.SUCCEEDED, run.error
    assert beat.poll() is None, (tmp_path / "beat.log").read_text()[-3000:]
    assert PeriodicTask.objects.get(id=before.id).queue == "agents"  # moved when beat started

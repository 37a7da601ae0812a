"""Recurring agents: django-celery-beat ``PeriodicTask`` rows that start runs.

Each tick starts one run, keyed by (schedule, fire time): the idempotency key
``schedule:<periodic task id>:<fire time>`` makes ``agentflow.start`` return the first run
to a repeat. The fire time is the moment the message was published, stamped into its
headers by the publisher (beat; see ``agentflow.tasks.stamp_fire_time``) and floored to
the schedule's tick: whole ``every`` seconds since the epoch for an interval, the minute
for a crontab. A redelivered message carries the same stamp, so it always agrees; a tick
sent twice (two beats, a restarted beat) agrees while both sends fall in one tick window.
A message without a stamp (sent by hand) counts at the time its worker takes it.

The ticks go to agentflow's queue, ``AGENTFLOW["QUEUE"]``: each row names it, and beat
gives every agentflow schedule the current setting when it starts (``sync_queues``), as
django-celery-beat copies ``beat_schedule`` into its rows then.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from celery.signals import beat_init
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError
from django.db.models import QuerySet
from django.utils import timezone
from django_celery_beat.models import (
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTasks,
)

from agentflow import _api as api
from agentflow import _registry as registry
from agentflow import conf
from agentflow._definitions import AgentDefinition
from agentflow._engine.serialize import check_text, dumps, loads, shortened
from agentflow._engine.state import sql
from agentflow._guardrails.budgets import run_budget
from agentflow._guardrails.sealing import protect, reveal
from agentflow.exceptions import InvalidInput, PayloadError
from agentflow.models import Run
from agentflow.models.schedules import TASK

FIRE_TIME_HEADER = "agentflow_fire_time"
CRONTAB_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
# The longest interval: django-celery-beat keeps ``every`` in a 32-bit integer column.
MAX_EVERY = 2**31 - 1

logger = logging.getLogger(__name__)


def schedule(
    agent: AgentDefinition | str,
    input: dict[str, Any] | None = None,
    *,
    every: int | None = None,
    crontab: str | None = None,
    name: str | None = None,
    owner: Any = None,
    budget: dict[str, Any] | None = None,
    enabled: bool = True,
) -> PeriodicTask:
    """Write a PeriodicTask that starts ``agent`` every ``every`` seconds or on ``crontab``.

    ``crontab`` is a 5-field string ("minute hour day-of-month month day-of-week") in the
    site's TIME_ZONE. ``owner`` and ``budget`` are passed to every ``agentflow.start``.
    """
    definition = registry.get_agent(agent.name if isinstance(agent, AgentDefinition) else agent)
    value = {} if input is None else input
    stored, sealed = protect(dumps(value, what=f"input of agent {definition.name}"))
    definition.validate_input(value)
    run_budget(definition.name, budget)
    # Every argument is checked before anything is written: a refusal leaves no row behind.
    when = _when(definition.name, every, crontab)
    name = _name(definition.name, name, every, crontab)
    owner_id = _owner(definition.name, owner)
    if PeriodicTask.objects.filter(name=name).exists():
        raise InvalidInput(
            f"A schedule named '{name}' already exists; pass another name, or change or delete "
            "that one in the admin (Periodic tasks)."
        )
    kwargs = {
        "agent": definition.name,
        "input": loads(stored),
        "sealed_input": sealed,
        "owner": owner_id,
        "budget": budget,
    }
    try:
        with sql.atomic():
            task = PeriodicTask.objects.create(
                name=name,
                task=TASK,
                enabled=enabled,
                kwargs="{}",
                queue=tick_queue(),
                **_timing(when),
            )
            # The task finds its schedule by id: that is half of each run's key.
            task.kwargs = json.dumps({"schedule": task.id, **kwargs})
            task.save(update_fields=["kwargs"])
    except IntegrityError:  # created by someone else just now
        raise InvalidInput(
            f"A schedule named '{name}' already exists; pass another name."
        ) from None
    return task


def tick_queue() -> str | None:
    """The queue of every tick: agentflow's (``AGENTFLOW["QUEUE"]``), None for the default."""
    return conf.setting("QUEUE") or None


def sync_queues() -> int:
    """Give every agentflow schedule the current ``AGENTFLOW["QUEUE"]``; how many changed.

    A schedule written before the setting changed names the old queue, where no worker
    may listen any more. Beat calls this when it starts (``sync_queues_at_beat_start``).
    """
    wanted = tick_queue()
    changed = PeriodicTask.objects.filter(task=TASK).exclude(queue=wanted).update(queue=wanted)
    if changed:
        PeriodicTasks.update_changed()  # a running DatabaseScheduler reloads its rows
    return changed


@beat_init.connect
def sync_queues_at_beat_start(sender: Any = None, **kwargs: Any) -> None:
    """At beat's start, put the rows it reads, and its entries of them, on agentflow's queue.

    The scheduler has read its rows by now and may take this change for its starting point
    rather than reload them, so its entries are corrected here too.
    """
    from django_celery_beat.schedulers import DatabaseScheduler

    scheduler = getattr(sender, "scheduler", None)
    if not isinstance(scheduler, DatabaseScheduler):
        return  # this beat does not read PeriodicTask rows
    changed = sync_queues()
    if not changed:
        return
    wanted = tick_queue()
    for entry in scheduler.schedule.values():
        if entry.task == TASK:
            entry.options.pop("queue", None)
            if wanted:
                entry.options["queue"] = wanted
    logger.info("Moved %d agentflow schedule(s) to queue %r.", changed, wanted)


def _shown(value: Any) -> str:
    """``repr(value)`` cut short for a message (an integer too long to print, described)."""
    try:
        text = repr(value)
    except ValueError:  # past sys.get_int_max_str_digits()
        text = f"<an integer of {value.bit_length():,} bits>"
    return shortened(text)


def _when(agent: str, every: Any, crontab: Any) -> dict[str, Any]:
    """``{"every": seconds}`` or the crontab's fields; InvalidInput naming the problem."""
    if (every is None) == (crontab is None):
        raise InvalidInput(
            f"Schedule of agent '{agent}' needs exactly one of every= (seconds) or crontab= "
            f"(a 5-field string); got {'both' if every is not None else 'neither'}."
        )
    if every is not None:
        if isinstance(every, bool) or not isinstance(every, int) or not 1 <= every <= MAX_EVERY:
            raise InvalidInput(
                f"Schedule of agent '{agent}': every={_shown(every)} must be a whole number of "
                f"seconds, at least 1 and at most {MAX_EVERY:,} (about 68 years)."
            )
        return {"every": every}
    fields = crontab.split() if isinstance(crontab, str) else []
    if len(fields) != len(CRONTAB_FIELDS):
        raise InvalidInput(
            f"Schedule of agent '{agent}': crontab={_shown(crontab)} must have 5 fields, "
            "'minute hour day-of-month month day-of-week', e.g. '0 9 * * 1-5'."
        )
    values = dict(zip(CRONTAB_FIELDS, fields, strict=True))
    for field, text in values.items():
        longest = CrontabSchedule._meta.get_field(field).max_length
        if len(text) > longest:
            raise InvalidInput(
                f"Schedule of agent '{agent}': the {field} field of crontab={_shown(crontab)} "
                f"is {len(text):,} characters long; it holds at most {longest}. Use ranges "
                "and steps (1-5, */15) instead of long lists."
            )
    from celery.schedules import crontab as celery_crontab

    try:
        celery_crontab(**values)
    except ValueError as exc:
        raise InvalidInput(
            f"Schedule of agent '{agent}': crontab={_shown(crontab)} is not valid: "
            f"{shortened(str(exc))}."
        ) from None
    return values


def _timing(when: dict[str, Any]) -> dict[str, Any]:
    """The PeriodicTask's ``interval`` or ``crontab`` row for checked ``_when`` values."""
    if "every" in when:
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=when["every"], period=IntervalSchedule.SECONDS
        )
        return {"interval": interval}
    cron, _ = CrontabSchedule.objects.get_or_create(**when, timezone=settings.TIME_ZONE)
    return {"crontab": cron}


def _name(agent: str, name: Any, every: int | None, crontab: str | None) -> str:
    """The schedule's name (given, or made); InvalidInput if it cannot be stored."""
    longest = PeriodicTask._meta.get_field("name").max_length
    if name is None or name == "":
        made = _default_name(agent, every, crontab)
        if len(made) > longest:
            raise InvalidInput(
                f"Schedule of agent '{agent}': the name made from the agent and its timing, "
                f"{_shown(made)}, is {len(made):,} characters long, over the limit of "
                f"{longest}; pass a shorter name=."
            )
        return made
    try:
        check_text(
            name, what=f"Schedule of agent '{agent}': name={_shown(name)}", max_chars=longest
        )
    except PayloadError as exc:
        raise InvalidInput(str(exc)) from None
    return name


def _owner(agent: str, owner: Any) -> int | None:
    """The owner's primary key; InvalidInput unless ``owner`` is None or a saved user."""
    if owner is None:
        return None
    user_model = get_user_model()
    if not isinstance(owner, user_model) or owner.pk is None:
        raise InvalidInput(
            f"Schedule of agent '{agent}': owner={_shown(owner)} must be a saved "
            f"{user_model._meta.label} or None; look the user up first, e.g. "
            f"get_user_model().objects.get({user_model.USERNAME_FIELD}=...)."
        )
    return owner.pk


def _default_name(agent: str, every: int | None, crontab: str | None) -> str:
    return f"{agent} every {every}s" if every is not None else f"{agent} at '{crontab}'"


def runs_of(periodic_task: PeriodicTask | int) -> QuerySet[Run]:
    """The runs a schedule started, newest first."""
    task_id = periodic_task.pk if isinstance(periodic_task, PeriodicTask) else periodic_task
    return Run.objects.filter(schedule_id=task_id).order_by("-created_at")


def tick_seconds(task: PeriodicTask) -> float:
    """How far apart the schedule's fire times are at least (a crontab: one minute)."""
    if task.interval_id is not None:
        return max(task.interval.schedule.run_every.total_seconds(), 1.0)
    return 60.0


def fire_time(task: PeriodicTask, stamped: str | None) -> datetime:
    """The tick a message belongs to: its publish time (else now), floored to the tick."""
    published = datetime.fromisoformat(stamped) if stamped else timezone.now()
    tick = tick_seconds(task)
    floored = published.timestamp() // tick * tick
    return datetime.fromtimestamp(floored, tz=UTC)


def idempotency_key(task: PeriodicTask, fired: datetime) -> str:
    """The start key of the run for one tick of one schedule."""
    return f"schedule:{task.id}:{fired.isoformat()}"


def start_tick(
    schedule: int,
    *,
    stamped: str | None,
    agent: str,
    input: Any,
    sealed_input: str | None = None,
    owner: int | None = None,
    budget: dict[str, Any] | None = None,
) -> Run | None:
    """Start the one run of this tick (or return it); None if the schedule was deleted."""
    task = PeriodicTask.objects.select_related("interval").filter(id=schedule).first()
    if task is None:
        return None
    user = _runs_owner(task, owner)
    return api.create_run(
        registry.get_agent(agent),
        reveal(input, sealed_input),
        idempotency_key=idempotency_key(task, fire_time(task, stamped)),
        owner=user,
        budget=budget,
        schedule_id=task.id,
    )


def start_now(task: PeriodicTask, *, key: str | None = None) -> Run:
    """Start a run of the schedule at once, outside its timing ("run now" in the console).

    The run has the schedule's agent, input, owner and budget, and is linked to it like a
    tick's run. ``key`` makes a repeated request return the first run instead of another.
    """
    kwargs = json.loads(task.kwargs or "{}")
    if not isinstance(kwargs, dict) or "agent" not in kwargs:
        raise InvalidInput(
            f"Schedule '{task.name}' ({task.id}) does not name an agent in its task kwargs; "
            "delete it and schedule the agent again with agentflow.schedule."
        )
    user = _runs_owner(task, kwargs.get("owner"))
    return api.create_run(
        registry.get_agent(kwargs["agent"]),
        reveal(kwargs.get("input"), kwargs.get("sealed_input")),
        idempotency_key=None if key is None else f"schedule:{task.id}:now:{key}",
        owner=user,
        budget=kwargs.get("budget"),
        schedule_id=task.id,
    )


def _runs_owner(task: PeriodicTask, owner: int | None) -> Any:
    """The user a schedule's runs belong to (None for none); InvalidInput if deleted."""
    if owner is None:
        return None
    user = get_user_model().objects.filter(pk=owner).first()
    if user is None:
        raise InvalidInput(
            f"Schedule '{task.name}' ({task.id}) starts runs for user {owner}, who no "
            "longer exists; give it another owner or delete it."
        )
    return user

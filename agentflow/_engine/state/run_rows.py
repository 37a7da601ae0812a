"""The engine's own transitions of a Run row, each with its event, each named for what it
guarantees (``run_actions`` has what operators and the API do).

Create (start), take the lease (acquire), park (wait) and finish are on every run's path,
so each is a single data-modifying statement there: the run row and its event row in one
round trip, with no savepoint inside the caller's transaction. SQLite takes a short
transaction of a few statements instead. The rest (lease under the row lock, wake,
pause, join, a child admitted under the run's lock) are ORM statements in one short
transaction.

    pending --take_lease--> running --park--> waiting --wake/take_lease--> running
    running --finish--> succeeded | failed        open --cancel--> cancelled
    running/waiting --pause--> paused --resume--> waiting
    failed --reopen_failed--> waiting     (cancel, resume, reopen_failed: run_actions)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from django.db import IntegrityError
from django.db.models import F
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery

from agentflow._engine.interrupts import LeaseLost
from agentflow._engine.state import child_rows, sql, step_rows
from agentflow._engine.state.outbox import (
    announce,
    append_event,
    event_insert,
    insert_event,
    record_json,
)
from agentflow._engine.state.sql import RUN, db_uuid, db_when
from agentflow._guardrails.redaction import redact_json, redact_text
from agentflow.models import Budget, Event, Run, clock

RUN_FIELDS = Run._meta.concrete_fields
T = TypeVar("T")


def _from_row(values: dict[str, Any]) -> Run:
    """A Run instance from a raw row keyed by column, converted as the ORM would."""
    connection = sql.connection()
    loaded = []
    for field in RUN_FIELDS:
        value = values[field.column]
        for convert in field.get_db_converters(connection):
            value = convert(value, None, connection)
        loaded.append(value)
    return Run.from_db(sql.alias(), [field.attname for field in RUN_FIELDS], loaded)


def create(run: Run, own_budget: Budget | None = None) -> bool:
    """Insert a new run and its ``run.created`` event; False if its idempotency key is taken.

    On PostgreSQL this is one ``INSERT ... ON CONFLICT DO NOTHING`` with the event in the
    same statement. The INSERT itself is built by the ORM, so it follows the model. A run
    with a budget of its own is inserted with it in one transaction: never one without
    the other.
    """
    if own_budget is None:
        return _insert(run)
    with sql.atomic():
        if not _insert(run):
            return False
        own_budget.run, own_budget.name = run, f"run {run.id}"
        own_budget.save()
    return True


def _insert(run: Run) -> bool:
    data = {"agent": run.agent, "version": run.agent_version}
    data_json = record_json(data, f"event {Event.Type.RUN_CREATED}")
    run.event_seq = 1
    if not sql.postgres():
        return _create_elsewhere(run, data_json)
    query = InsertQuery(Run, on_conflict=OnConflict.IGNORE)
    query.insert_values(RUN_FIELDS, [run])
    ((insert, params),) = query.get_compiler(using=sql.alias()).as_sql()
    with sql.cursor() as cursor:
        cursor.execute(
            f"WITH created AS ({insert} RETURNING id, event_seq), "
            f"evented AS ({event_insert('created')}) SELECT id FROM created",
            [*params, Event.Type.RUN_CREATED, data_json, db_when(clock.now())],
        )
        created = cursor.fetchone() is not None
    if created:
        run._state.adding, run._state.db = False, sql.alias()
        announce(run.id, 1, Event.Type.RUN_CREATED, data_json)
    return created


def _create_elsewhere(run: Run, data_json: str | None) -> bool:
    try:
        with sql.atomic():
            run.save(force_insert=True, using=sql.alias())
            with sql.cursor() as cursor:
                insert_event(cursor, run.id, 1, Event.Type.RUN_CREATED, data_json)
    except IntegrityError:
        if run.idempotency_key is None:
            raise
        return False
    return True


def take_lease(
    run_id: UUID, owner: str, expires_at: datetime, now: datetime
) -> tuple[Run, bool] | None:
    """Take the run's lease if it is active and free or expired.

    Returns the Run as it now stands, and whether this is its first start.

    One statement: the row lock, the new token, and ``run.started`` on a first start.
    Returns None when the run is finished, missing, or held by a live lease (the caller
    then looks closer, off the fast path).
    """
    if not sql.postgres():
        return None
    columns = ", ".join(f"r.{sql.quote(field.column)}" for field in RUN_FIELDS)
    pending = sql.literal(Run.Status.PENDING)
    data_json = record_json({"worker": owner}, "event run.started")
    with sql.cursor() as cursor:
        cursor.execute(
            f"WITH old AS (SELECT id, status FROM {RUN} WHERE id = %s FOR UPDATE), "
            f"taken AS (UPDATE {RUN} r SET status = %s, lease_owner = %s, "
            "lease_token = r.lease_token + 1, lease_expires_at = %s, "
            "started_at = COALESCE(r.started_at, %s), wait_reason = '', nudged_at = NULL, "
            f"event_seq = r.event_seq + CASE WHEN old.status IN {pending} THEN 1 ELSE 0 END "
            f"FROM old WHERE r.id = old.id AND old.status IN {sql.ACTIVE_RUN} "
            "AND (r.lease_expires_at IS NULL OR r.lease_expires_at < %s) "
            f"RETURNING {columns}, old.status AS previous_status), "
            f"started AS ({event_insert('taken')} "
            f"WHERE previous_status IN {pending}) "
            "SELECT * FROM taken",
            [
                db_uuid(run_id),
                Run.Status.RUNNING,
                owner,
                db_when(expires_at),
                db_when(now),
                db_when(now),
                Event.Type.RUN_STARTED,
                data_json,
                db_when(now),
            ],
        )
        values = sql.fetch_dict(cursor)
    if values is None:
        return None
    run = _from_row(values)
    first_start = values["previous_status"] == Run.Status.PENDING
    if first_start:
        announce(run.id, run.event_seq, Event.Type.RUN_STARTED, data_json)
    return run, first_start


def park(fence: step_rows.Fence, wake_seq: int, reason: str, wake_at: datetime | None) -> bool:
    """Mark the held run waiting, unless a wake-up moved ``wake_seq``; with ``run.waiting``."""
    changes = {
        "status": Run.Status.WAITING,
        "wait_reason": redact_text(reason)[:500],  # a reason may quote an approval title
        "wake_at": db_when(wake_at),
        "lease_expires_at": None,
        "lease_owner": "",
    }
    where = [db_uuid(fence.run_id), fence.token, wake_seq, Run.Status.RUNNING]
    data = {"reason": reason, "wake_at": wake_at.isoformat() if wake_at else None}
    return _transition(
        changes, "id = %s AND lease_token = %s AND wake_seq = %s AND status = %s", where,
        Event.Type.RUN_WAITING, data,
    )  # fmt: skip


def finish(
    fence: step_rows.Fence,
    *,
    status: str,
    output_json: str | None,
    error: dict[str, Any] | None,
    event: tuple[str, dict[str, Any]],
) -> None:
    """Mark the run finished, with its output or error, if the lease still holds."""
    changes = {
        "status": status,
        "output": redact_json(output_json),
        "error": record_json(error, "run error"),
        "finished_at": db_when(clock.now()),
        "lease_expires_at": None,
        "lease_owner": "",
        "wait_reason": "",
        "wake_at": None,
    }
    where = [db_uuid(fence.run_id), fence.token, Run.Status.RUNNING]
    if not _transition(changes, "id = %s AND lease_token = %s AND status = %s", where, *event):
        raise LeaseLost(f"run {fence.run_id} is no longer held with token {fence.token}")


def _transition(
    changes: dict[str, Any], where: str, where_values: list[Any], type_: str, data: Any
) -> bool:
    """UPDATE the run row where ``where`` holds, with an event; False if no row matched."""
    data_json = record_json(data, f"event {type_}")
    assignments = ", ".join(f"{column} = %s" for column in changes)
    update = (
        f"UPDATE {RUN} SET {assignments}, event_seq = event_seq + 1 WHERE {where} "
        "RETURNING id, event_seq"
    )
    params = [*changes.values(), *where_values]
    with sql.cursor() as cursor:
        if sql.postgres():
            cursor.execute(
                f"WITH moved AS ({update}), evented AS ({event_insert('moved')}) "
                "SELECT event_seq FROM moved",
                [*params, type_, data_json, db_when(clock.now())],
            )
            row = cursor.fetchone()
            if row is not None:
                announce(sql.as_uuid(where_values[0]), row[0], type_, data_json)
            return row is not None
        with sql.atomic():
            cursor.execute(update, params)
            row = cursor.fetchone()
            if row is not None:
                insert_event(cursor, sql.as_uuid(where_values[0]), row[1], type_, data_json)
        return row is not None


# -- off the hot path: ORM statements, each transition in one short transaction ----------


@dataclass(frozen=True)
class Busy:
    """The run's lease is held and live: the holder was asked to look again.

    The caller should come back at ``retry_at`` in case the holder is dead. Such a
    wake-up is put off, never dropped.
    """

    retry_at: datetime


LEASE_FIELDS = [
    "status",
    "lease_owner",
    "lease_token",
    "lease_expires_at",
    "started_at",
    "wait_reason",
    "nudged_at",
]


def take_lease_locked(
    run_id: UUID,
    owner: str,
    now: datetime,
    expires_at: datetime,
    retry_after: Callable[[datetime], datetime],
) -> tuple[Run, bool] | Busy | None:
    """``take_lease`` off the fast path: under the row lock, nudge a live holder or take over.

    A live holder gets ``wake_seq`` moved (it looks again before it parks), and one put-off
    wake-up is kept per lease expiry (``nudged_at``): ``Busy`` for the first, None after.
    None too when the run is finished or missing.
    """
    with sql.atomic():
        run = Run.objects.select_for_update().filter(id=run_id).first()
        if run is None or run.status not in Run.ACTIVE:
            return None
        if run.lease_expires_at is not None and run.lease_expires_at >= now:
            scheduled = run.nudged_at is not None and run.nudged_at > run.lease_expires_at
            retry_at = retry_after(run.lease_expires_at)
            changes: dict[str, Any] = {"wake_seq": F("wake_seq") + 1}
            if not scheduled:
                changes["nudged_at"] = retry_at
            Run.objects.filter(id=run_id).update(**changes)
            return None if scheduled else Busy(retry_at)
        first_start = run.status == Run.Status.PENDING
        run.status = Run.Status.RUNNING
        run.lease_owner = owner
        run.lease_token += 1
        run.lease_expires_at = expires_at
        run.started_at = run.started_at or now
        run.wait_reason = ""
        run.nudged_at = None
        run.save(update_fields=LEASE_FIELDS)
        if first_start:
            run.event_seq = append_event(run.id, Event.Type.RUN_STARTED, {"worker": owner})
    return run, first_start


def renew_lease(fence: step_rows.Fence, expires_at: datetime) -> bool:
    """Push the lease's expiry forward; False if the token is no longer the holder's."""
    return bool(
        Run.objects.filter(
            id=fence.run_id, lease_token=fence.token, status=Run.Status.RUNNING
        ).update(lease_expires_at=expires_at)
    )


def lease_state(run_id: UUID) -> tuple[int, int, str] | None:
    """(lease token, wake seq, status) as committed now, for a holder whose park was refused."""
    return Run.objects.filter(id=run_id).values_list("lease_token", "wake_seq", "status").first()


def wake(run_id: UUID, now: datetime) -> bool:
    """Tell an active run something it waits on is ready; True if it is active.

    Moving ``wake_seq`` makes a holder that is about to park look again, and ``wake_at``
    makes the reconciler send it if the caller's wake-up message is lost.
    """
    return bool(
        Run.objects.filter(id=run_id, status__in=Run.ACTIVE).update(
            wake_seq=F("wake_seq") + 1, wake_at=now
        )
    )


def _paused(reason: str) -> dict[str, Any]:
    return {
        "status": Run.Status.PAUSED,
        "wait_reason": redact_text(reason)[:500],
        "lease_owner": "",
        "lease_expires_at": None,
        "wake_at": None,
    }


def pause_held(fence: step_rows.Fence, reason: str, limit: dict[str, Any]) -> bool:
    """Pause a run the caller holds the lease of, with ``run.paused``; False if it is gone.

    ``limit``: the guardrail that stopped it, as data (``_guardrails.limit_hit``), for resume.
    """
    with sql.atomic():
        paused = Run.objects.filter(
            id=fence.run_id, lease_token=fence.token, status=Run.Status.RUNNING
        ).update(**_paused(reason))
        if paused:
            append_event(fence.run_id, Event.Type.RUN_PAUSED, {"reason": reason, "limit": limit})
    return bool(paused)


def pause(run_id: UUID, reason: str, limit: dict[str, Any]) -> bool:
    """Pause an active run from outside its lease, with ``run.paused``; False if not active.

    Breaking a holder's lease is safe only where the holder cannot get past what the
    caller holds (a fan-out child pauses its run: the agent cannot pass the open fan-out).
    """
    with sql.atomic():
        paused = Run.objects.filter(id=run_id, status__in=Run.ACTIVE).update(**_paused(reason))
        if paused:
            append_event(run_id, Event.Type.RUN_PAUSED, {"reason": reason, "limit": limit})
    return bool(paused)


def mark_nudged(run_ids: list[UUID], now: datetime) -> None:
    """Record that the reconciler sent these runs a wake-up now (it skips them a while)."""
    Run.objects.filter(id__in=run_ids).update(nudged_at=now)


def join_fan_out(run_id: UUID, position: int) -> tuple[bool, bool]:
    """Close a complete fan-out and wake its run, with ``step.completed``.

    Returns (joined, woken): joined is True only for the one caller that closed it; woken
    whether its run was active to be woken.
    """
    now = clock.now()
    with sql.atomic():
        closed = child_rows.close_parent(run_id, position, now)
        if closed is None:
            return False, False
        status, kind, name = closed
        woken = wake(run_id, now)
        append_event(
            run_id,
            Event.Type.STEP_COMPLETED,
            {"position": position, "kind": kind, "name": name, "joined": True, "status": status},
        )
    return True, woken


def admit_child(
    run_id: UUID, step_id: int, attempt: int, admit: Callable[[], T | None]
) -> T | None:
    """Decide on a claimed child under its run's row lock: ``admit()`` if the run is active.

    When the run is not active, or ``admit`` admits nothing (None), the claim is handed
    back (the attempt uncounted) in the same transaction. ``resume`` and ``pause`` update
    the same row, so a decision made here (a budget that still refuses) cannot cross an
    operator's resume, and a child handed back while its run is paused is there for
    ``resume`` to send.
    """
    with sql.atomic():
        if Run.objects.select_for_update().filter(id=run_id, status__in=Run.ACTIVE).exists():
            admitted = admit()
            if admitted is not None:
                return admitted
        child_rows.hand_back(step_id, attempt)
    return None

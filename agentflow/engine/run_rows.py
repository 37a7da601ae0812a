"""A run's row transitions, each one statement with its event on PostgreSQL.

Create (start), take the lease (acquire), park (wait) and finish are on every run's path,
so each is a single data-modifying statement there: the run row and its event row in one
round trip, with no savepoint inside the caller's transaction. SQLite takes a short
transaction of a few statements instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import IntegrityError
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery

from agentflow.engine import sql, store
from agentflow.engine.interrupts import LeaseLost
from agentflow.engine.sql import EVENT, RUN, db_uuid, db_when
from agentflow.gates.redaction import redact_json, redact_text
from agentflow.models import Event, Run, clock

RUN_FIELDS = Run._meta.concrete_fields


def _event_insert(source: str) -> str:
    """Insert one event per row of CTE ``source`` (which has ``id`` and ``event_seq``).

    Its parameters: the event type, its data and the time.
    """
    return (
        f"INSERT INTO {EVENT} {store.EVENT_COLUMNS} SELECT id, event_seq, %s, %s, %s FROM {source}"
    )


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


def create(run: Run) -> bool:
    """Insert a new run and its ``run.created`` event; False if its idempotency key is taken.

    On PostgreSQL this is one ``INSERT ... ON CONFLICT DO NOTHING`` with the event in the
    same statement. The INSERT itself is built by the ORM, so it follows the model.
    """
    data = {"agent": run.agent, "version": run.agent_version}
    data_json = store.record_json(data, f"event {Event.Type.RUN_CREATED}")
    run.event_seq = 1
    if not sql.postgres():
        return _create_elsewhere(run, data_json)
    query = InsertQuery(Run, on_conflict=OnConflict.IGNORE)
    query.insert_values(RUN_FIELDS, [run])
    ((insert, params),) = query.get_compiler(using=sql.alias()).as_sql()
    with sql.cursor() as cursor:
        cursor.execute(
            f"WITH created AS ({insert} RETURNING id, event_seq), "
            f"evented AS ({_event_insert('created')}) SELECT id FROM created",
            [*params, Event.Type.RUN_CREATED, data_json, db_when(clock.now())],
        )
        created = cursor.fetchone() is not None
    if created:
        run._state.adding, run._state.db = False, sql.alias()
        store.announce(run.id, 1, Event.Type.RUN_CREATED, data_json)
    return created


def _create_elsewhere(run: Run, data_json: str | None) -> bool:
    try:
        with sql.atomic():
            run.save(force_insert=True, using=sql.alias())
            with sql.cursor() as cursor:
                store.insert_event(cursor, run.id, 1, Event.Type.RUN_CREATED, data_json)
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
    data_json = store.record_json({"worker": owner}, "event run.started")
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
            f"started AS ({_event_insert('taken')} "
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
        store.announce(run.id, run.event_seq, Event.Type.RUN_STARTED, data_json)
    return run, first_start


def park(fence: store.Fence, wake_seq: int, reason: str, wake_at: datetime | None) -> bool:
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
    fence: store.Fence,
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
        "error": store.record_json(error, "run error"),
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
    data_json = store.record_json(data, f"event {type_}")
    assignments = ", ".join(f"{column} = %s" for column in changes)
    update = (
        f"UPDATE {RUN} SET {assignments}, event_seq = event_seq + 1 WHERE {where} "
        "RETURNING id, event_seq"
    )
    params = [*changes.values(), *where_values]
    with sql.cursor() as cursor:
        if sql.postgres():
            cursor.execute(
                f"WITH moved AS ({update}), evented AS ({_event_insert('moved')}) "
                "SELECT event_seq FROM moved",
                [*params, type_, data_json, db_when(clock.now())],
            )
            row = cursor.fetchone()
            if row is not None:
                store.announce(sql.as_uuid(where_values[0]), row[0], type_, data_json)
            return row is not None
        with sql.atomic():
            cursor.execute(update, params)
            row = cursor.fetchone()
            if row is not None:
                store.insert_event(cursor, sql.as_uuid(where_values[0]), row[1], type_, data_json)
        return row is not None

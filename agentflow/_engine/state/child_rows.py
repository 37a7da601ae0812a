"""Fan-out children's rows: recorded in bulk, claimed, finished, reset, and the one join.

A fan-out's parent is a step at one position; its children are steps at (position,
index). The database decides when a fan-out is complete: when no child is open (a probe
of the partial index of open children). Each child's claim and outcome is one
conditional statement on its attempt counter, so a stale worker's write matches nothing.
The join is a conditional update of the parent that only one caller can win.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from agentflow._engine.serialize import loads
from agentflow._engine.state import sql
from agentflow._engine.state.outbox import record_json
from agentflow._engine.state.sql import RUN, STEP, db_uuid, db_when
from agentflow._engine.state.step_rows import STEP_COLUMNS, step_columns, step_values
from agentflow._guardrails.sealing import protect
from agentflow.exceptions import InvalidState
from agentflow.models import Step, clock


def _open_child_sql() -> str:
    """Whether a child of (run, position) is still open; served by agentflow_step_open_child."""
    return (
        f"SELECT 1 FROM {STEP} o WHERE o.run_id = %s AND o.position = %s "
        f"AND o.{sql.quote('index')} IS NOT NULL AND o.status IN {sql.OPEN_STEP}"
    )


CHILD_BATCH = 1000


def insert_children(rows: list[dict[str, Any]]) -> list[tuple[int, str, int]]:
    """Insert children (``step_values`` columns by name) in multi-row INSERTs.

    Returns (id, status, index) of each.
    """
    placeholders = "(" + ", ".join(["%s"] * len(STEP_COLUMNS)) + ")"
    inserted: list[tuple[int, str, int]] = []
    with sql.cursor(prepared=False) as cursor:  # as many rows as the fan-out has
        for start in range(0, len(rows), CHILD_BATCH):
            batch = rows[start : start + CHILD_BATCH]
            values = [value for row in batch for value in step_values(**row)]
            cursor.execute(
                f"INSERT INTO {STEP} ({step_columns()}) VALUES "
                f"{', '.join([placeholders] * len(batch))} "
                f"RETURNING id, status, {sql.quote('index')}",
                values,
            )
            inserted += cursor.fetchall()
    return inserted


def any_open_child(run_id: UUID, position: int) -> bool:
    """Whether a child of the fan-out is still pending, scheduled, running or waiting."""
    with sql.cursor() as cursor:
        cursor.execute(f"SELECT EXISTS ({_open_child_sql()})", [db_uuid(run_id), position])
        return bool(cursor.fetchone()[0])


def close_parent(run_id: UUID, position: int, now: datetime) -> tuple[str, str, str] | None:
    """Close a fan-out's parent once no child is open; (status, kind, name), or None.

    Failed if a child failed. A ``call`` parent (a routed ``ctx.call``, one child) takes
    its child's output and error, so it replays like a call that ran inline.
    """
    index = sql.quote("index")
    child = f"FROM {STEP} c WHERE c.run_id = %s AND c.position = %s AND c.{index} IS NOT NULL"
    # The call's one child, by its unique key. Postgres may evaluate these subqueries even
    # for a map parent (a concurrent update of the parent re-checks the row with every
    # InitPlan forced), so each must return at most one row whatever the parent's kind.
    only = f"{child} AND c.{index} = 0"
    failed, call = sql.literal(Step.Status.FAILED), sql.literal(Step.Kind.CALL)
    statement = (
        f"UPDATE {STEP} SET finished_at = %s, status = CASE WHEN EXISTS ("
        f"  SELECT 1 {child} AND c.status = {failed}"
        f") THEN {failed} ELSE {sql.literal(Step.Status.SUCCEEDED)} END, "
        f"output = CASE WHEN kind = {call} THEN (SELECT c.output {only}) ELSE output END, "
        f"sealed_output = CASE WHEN kind = {call} THEN (SELECT c.sealed_output {only}) "
        "ELSE sealed_output END, "
        f"error = CASE WHEN kind = {call} THEN (SELECT c.error {only}) ELSE error END "
        f"WHERE run_id = %s AND position = %s AND {index} IS NULL "
        f"AND status IN {sql.literal(Step.Status.WAITING)} AND NOT EXISTS ({_open_child_sql()}) "
        "RETURNING status, kind, name"
    )
    where = [db_uuid(run_id), position]
    with sql.cursor() as cursor:
        cursor.execute(statement, [db_when(now), *(where * 6)])
        return cursor.fetchone()


def claim_child(step_id: int, now: datetime, due_by: datetime) -> dict[str, Any] | None:
    """open -> running, with attempts + 1, if due and its run is active; one statement.

    Returns the child's columns and its run's (``agent``, ``owner_id``,
    ``has_own_budget``) by name. The first claim sets ``started_at``: a child starts when
    a worker takes it, not when its fan-out was recorded.
    """
    index = sql.quote("index")
    with sql.cursor() as cursor:
        cursor.execute(
            f"UPDATE {STEP} SET status = %s, attempts = attempts + 1, heartbeat_at = %s, "
            "started_at = COALESCE(started_at, %s), wake_at = NULL "
            f"WHERE id = %s AND status IN {sql.CLAIMABLE_STEP} "
            "AND (wake_at IS NULL OR wake_at <= %s) "
            f"AND EXISTS (SELECT 1 FROM {RUN} r WHERE r.id = run_id AND r.status IN "
            f"{sql.ACTIVE_RUN}) "
            f"RETURNING id, run_id, position, {index} AS child_index, name, args, sealed_args, "
            "idempotency_key, attempts, rate_slot, "
            f"(SELECT agent FROM {RUN} r WHERE r.id = run_id) AS agent, "
            f"(SELECT owner_id FROM {RUN} r WHERE r.id = run_id) AS owner_id, "
            f"(SELECT has_own_budget FROM {RUN} r WHERE r.id = run_id) AS has_own_budget",
            [Step.Status.RUNNING, db_when(now), db_when(now), step_id, db_when(due_by)],
        )
        return sql.fetch_dict(cursor)


def finish_child(
    step_id: int, attempt: int, status: str, output_json: str | None, error: Any
) -> tuple[bool, bool, bool]:
    """Record a child's outcome if its claim (``attempt``) still holds.

    Returns (recorded, a sibling is still open, every open sibling was running). On
    PostgreSQL all in one statement; the probe reads siblings as they were before it, so
    two that finish at the same moment may each see the other open (both running): the
    caller looks again after its commit then. SQLite serializes writes: its probe runs
    after the commit and cannot miss a sibling's outcome.
    """
    stored_output, sealed_output = protect(output_json)
    update = (
        f"UPDATE {STEP} SET status = %s, output = %s, sealed_output = %s, error = %s, "
        "finished_at = %s, heartbeat_at = NULL, rate_slot = NULL "
        f"WHERE id = %s AND status IN {sql.literal(Step.Status.RUNNING)} AND attempts = %s"
    )
    values = [
        status,
        stored_output,
        sealed_output,
        record_json(error, "child error"),
        db_when(clock.now()),
        step_id,
        attempt,
    ]
    with sql.cursor() as cursor:
        if sql.postgres():
            index = sql.quote("index")
            sibling = (
                f"SELECT 1 FROM {STEP} o, done WHERE o.run_id = done.run_id "
                f"AND o.position = done.position AND o.{index} IS NOT NULL "
                f"AND o.status IN {sql.OPEN_STEP} AND o.id <> %s"
            )
            cursor.execute(
                f"WITH done AS ({update} RETURNING run_id, position) "
                f"SELECT EXISTS (SELECT 1 FROM done), EXISTS ({sibling}), "
                f"EXISTS ({sibling} AND o.status <> {sql.literal(Step.Status.RUNNING)})",
                [*values, step_id, step_id],
            )
            recorded, open_left, queued = cursor.fetchone()
            return bool(recorded), bool(open_left), bool(open_left and not queued)
        cursor.execute(update + " RETURNING run_id, position", values)
        row = cursor.fetchone()
    if row is None:
        return False, False, False
    return True, any_open_child(sql.as_uuid(row[0]), row[1]), False


# -- off the hot path: ORM statements on children -------------------------------------


def renew_claim(step_id: int, attempt: int) -> bool:
    """Beat a running child's heartbeat; False if its claim (``attempt``) is gone."""
    return bool(
        Step.objects.filter(id=step_id, status=Step.Status.RUNNING, attempts=attempt).update(
            heartbeat_at=clock.now()
        )
    )


def defer(step_id: int, attempt: int, wake_at: datetime | None, **changes: Any) -> bool:
    """running -> scheduled for ``wake_at`` if the claim holds; marked dispatched now.

    ``changes``: what else the deferral sets (a rate slot booked, an error to retry on,
    ``attempts`` handed back when the attempt did not count).
    """
    return bool(
        Step.objects.filter(id=step_id, status=Step.Status.RUNNING, attempts=attempt).update(
            status=Step.Status.SCHEDULED,
            wake_at=wake_at,
            heartbeat_at=None,
            dispatched_at=clock.now(),
            **changes,
        )
    )


def hand_back(step_id: int, attempt: int) -> bool:
    """running -> pending, the attempt uncounted, if the claim holds (its run was paused)."""
    return bool(
        Step.objects.filter(id=step_id, status=Step.Status.RUNNING, attempts=attempt).update(
            status=Step.Status.PENDING, attempts=attempt - 1, heartbeat_at=None
        )
    )


def mark_dispatched(step_ids: list[int], now: datetime) -> None:
    """Children about to be sent now: the lost-wake-up scan leaves them alone a while."""
    Step.objects.filter(id__in=step_ids, status__in=Step.CLAIMABLE).update(dispatched_at=now)


def claimable_children(run_id: UUID, now: datetime) -> list[tuple[int, Any, str]]:
    """(id, wake_at, tool) of the run's claimable children, marked dispatched now."""
    children = list(
        Step.objects.filter(
            run_id=run_id, index__isnull=False, status__in=Step.CLAIMABLE
        ).values_list("id", "wake_at", "name")
    )
    mark_dispatched([step_id for step_id, *_ in children], now)
    return children


def reset_dead(now: datetime, lease: timedelta, batch: int) -> list[tuple[int, str]]:
    """Hand back claims whose heartbeat stopped; return (id, tool) of those this call reset.

    They are marked dispatched now, since the caller sends them at once: the lost-wake-up
    scan must not find (and send, and count) them a second time.
    """
    stale = Step.objects.filter(
        index__isnull=False, status=Step.Status.RUNNING, heartbeat_at__lt=now - lease
    ).values_list("id", "attempts", "name")[:batch]
    return [
        (step_id, name)
        for step_id, attempts, name in stale
        if Step.objects.filter(id=step_id, status=Step.Status.RUNNING, attempts=attempts).update(
            status=Step.Status.SCHEDULED, wake_at=None, heartbeat_at=None, dispatched_at=now
        )
    ]


def release_approved(step_id: int, now: datetime, args_json: str | None) -> bool:
    """waiting -> pending for an approved child, with the reviewer's arguments if edited."""
    fields: dict[str, Any] = {"status": Step.Status.PENDING, "dispatched_at": now}
    if args_json is not None:
        stored, sealed = protect(args_json)
        fields.update(args=loads(stored), sealed_args=sealed)
    return bool(Step.objects.filter(id=step_id, status=Step.Status.WAITING).update(**fields))


def fail_waiting(step_id: int, error: dict[str, Any], now: datetime) -> bool:
    """waiting -> failed for a child a person refused (it never ran)."""
    return bool(
        Step.objects.filter(id=step_id, status=Step.Status.WAITING).update(
            status=Step.Status.FAILED, error=error, finished_at=now
        )
    )


def reopen_failed_children(
    run_id: UUID, parent_id: int, kind: str, position: int, now: datetime
) -> list[tuple[int, str]]:
    """Reset a failed fan-out's failed children that ran, reopen its parent; (id, tool) of each.

    A child refused before it ran (a policy denial, arguments its tool refused, a rejected
    approval) has no attempt and stays failed: running it now would skip that gate.
    ``InvalidState`` (nothing changed) when no failed child ran.
    """
    failed = Step.objects.filter(
        run_id=run_id, position=position, index__isnull=False, status=Step.Status.FAILED
    )
    reset = list(failed.filter(attempts__gt=0).order_by("index").values_list("id", "name"))
    ids = [step_id for step_id, _ in reset]
    if not ids:
        raise InvalidState(
            f"Run {run_id} failed at the {kind} at position {position}, whose "
            "failed calls were refused before they ran (a policy, their arguments or a "
            "rejected approval); retrying would refuse them again. Fork the run at "
            f"{position} (agentflow.fork(run, at={position})) to ask again."
        )
    Step.objects.filter(id__in=ids).update(
        status=Step.Status.PENDING,
        output=None,
        sealed_output=None,
        error=None,
        attempts=0,
        started_at=None,
        finished_at=None,
        wake_at=None,
        heartbeat_at=None,
        rate_slot=None,
        dispatched_at=now,
    )
    Step.objects.filter(id=parent_id).update(
        status=Step.Status.WAITING, finished_at=None, error=None
    )
    return reset

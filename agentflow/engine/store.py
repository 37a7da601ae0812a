"""Reads and fenced writes of steps and events.

Each step is recorded in one transaction: the fencing check (the writer still holds the
run's lease), the Step row and its Event row. The SQL is written by hand because this is
the hot path: one ``ctx.step`` must cost about one commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from agentflow.engine.interrupts import LeaseLost
from agentflow.engine.serialize import dumps, loads
from agentflow.models import Event, Run, Step

RUN = Run._meta.db_table
STEP = Step._meta.db_table
EVENT = Event._meta.db_table


@dataclass(frozen=True)
class Fence:
    """What a writer proves on every write: the run and the lease token it holds."""

    run_id: UUID
    token: int


@dataclass
class StepRecord:
    """A recorded step as replay needs it."""

    id: int
    position: int
    kind: str
    name: str
    status: str
    args_hash: str
    output: Any
    error: dict[str, Any] | None
    attempts: int
    wake_at: datetime | None


def load_history(run_id: UUID) -> dict[int, StepRecord]:
    """Every top-level step of a run by position, in one query."""
    rows = Step.objects.filter(run_id=run_id, index__isnull=True).values_list(
        "id",
        "position",
        "kind",
        "name",
        "status",
        "args_hash",
        "output",
        "error",
        "attempts",
        "wake_at",
    )
    return {row[1]: StepRecord(*row) for row in rows}


def _uuid(value: UUID) -> Any:
    return Run._meta.pk.get_db_prep_value(value, connection)


def _when(value: datetime | None) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def _json(value: Any, what: str) -> str | None:
    return None if value is None else dumps(value, what=what)


def _bump_seq(cursor: Any, fence: Fence) -> int:
    """Take the next event number, proving the lease in the same statement."""
    cursor.execute(
        f"UPDATE {RUN} SET event_seq = event_seq + 1 "
        "WHERE id = %s AND lease_token = %s AND status = 'running' RETURNING event_seq",
        [_uuid(fence.run_id), fence.token],
    )
    row = cursor.fetchone()
    if row is None:
        raise LeaseLost(f"run {fence.run_id} is no longer held with token {fence.token}")
    return row[0]


def _check_fence(cursor: Any, fence: Fence) -> None:
    cursor.execute(
        f"SELECT 1 FROM {RUN} WHERE id = %s AND lease_token = %s AND status = 'running'",
        [_uuid(fence.run_id), fence.token],
    )
    if cursor.fetchone() is None:
        raise LeaseLost(f"run {fence.run_id} is no longer held with token {fence.token}")


def _insert_event(cursor: Any, run_id: UUID, seq: int, type_: str, data_json: str) -> None:
    cursor.execute(
        f"INSERT INTO {EVENT} (run_id, seq, type, data, created_at) VALUES (%s, %s, %s, %s, %s)",
        [_uuid(run_id), seq, type_, data_json, _when(timezone.now())],
    )


def insert_step(
    fence: Fence,
    *,
    position: int,
    kind: str,
    name: str,
    status: str,
    args_json: str,
    args_hash: str,
    output_json: str | None = None,
    error: dict[str, Any] | None = None,
    attempts: int = 0,
    key: str = "",
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
    wake_at: datetime | None = None,
    event: tuple[str, dict[str, Any]] | None = None,
) -> tuple[int, Any]:
    """Record a new step (and its event) if the lease still holds; return (id, stored output)."""
    error_json = _json(error, f"error of step {position}")
    event_json = _json(event[1], f"event {event[0]}") if event else None
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            if event:
                seq = _bump_seq(cursor, fence)
            else:
                _check_fence(cursor, fence)
            cursor.execute(
                f"INSERT INTO {STEP} (run_id, position, {connection.ops.quote_name('index')}, "
                "kind, name, status, args, args_hash, output, error, attempts, idempotency_key, "
                "started_at, finished_at, wake_at, input_tokens, output_tokens, cost) "
                "VALUES (%s, %s, NULL, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0, 0, 0) "
                "RETURNING id, output",
                [
                    _uuid(fence.run_id),
                    position,
                    kind,
                    name,
                    status,
                    args_json,
                    args_hash,
                    output_json,
                    error_json,
                    attempts,
                    key,
                    _when(started_at),
                    _when(finished_at),
                    _when(wake_at),
                ],
            )
            step_id, output = cursor.fetchone()
            if event:
                _insert_event(cursor, fence.run_id, seq, event[0], event_json)
    except IntegrityError as exc:
        # Another holder recorded this position first: this writer is stale.
        raise LeaseLost(
            f"position {position} of run {fence.run_id} was recorded by another worker"
        ) from exc
    return step_id, loads(output)


def update_step(
    fence: Fence,
    step_id: int,
    *,
    status: str,
    output_json: str | None = None,
    error: dict[str, Any] | None = None,
    attempts: int | None = None,
    finished_at: datetime | None = None,
    wake_at: datetime | None = None,
    event: tuple[str, dict[str, Any]] | None = None,
) -> Any:
    """Move a step to a new status (and write its event) if the lease still holds."""
    error_json = _json(error, f"error of step {step_id}")
    event_json = _json(event[1], f"event {event[0]}") if event else None
    with transaction.atomic(), connection.cursor() as cursor:
        if event:
            seq = _bump_seq(cursor, fence)
        else:
            _check_fence(cursor, fence)
        cursor.execute(
            f"UPDATE {STEP} SET status = %s, output = %s, error = %s, "
            "attempts = COALESCE(%s, attempts), finished_at = %s, wake_at = %s "
            "WHERE id = %s RETURNING output",
            [
                status,
                output_json,
                error_json,
                attempts,
                _when(finished_at),
                _when(wake_at),
                step_id,
            ],
        )
        row = cursor.fetchone()
        if row is None:
            raise LeaseLost(f"step {step_id} of run {fence.run_id} no longer exists")
        if event:
            _insert_event(cursor, fence.run_id, seq, event[0], event_json)
    return loads(row[0])


def append_event(run_id: UUID, type_: str, data: dict[str, Any]) -> int:
    """Write an event for a writer that holds no lease (start, signal, cancel); return its seq.

    Taking the sequence number locks the run row until commit, so events commit in
    sequence order and a reader that resumes after seq N misses nothing.
    """
    data_json = dumps(data, what=f"event {type_}")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {RUN} SET event_seq = event_seq + 1 WHERE id = %s RETURNING event_seq",
            [_uuid(run_id)],
        )
        (seq,) = cursor.fetchone()
        _insert_event(cursor, run_id, seq, type_, data_json)
    return seq


def finish_run(
    fence: Fence,
    *,
    status: str,
    output_json: str | None,
    error: dict[str, Any] | None,
    event: tuple[str, dict[str, Any]],
) -> None:
    """Mark the run finished, with its output or error, if the lease still holds."""
    error_json = _json(error, "run error")
    event_json = dumps(event[1], what=f"event {event[0]}")
    now = timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {RUN} SET status = %s, output = %s, error = %s, finished_at = %s, "
            "lease_expires_at = NULL, lease_owner = '', wait_reason = '', wake_at = NULL, "
            "event_seq = event_seq + 1 "
            "WHERE id = %s AND lease_token = %s AND status = 'running' RETURNING event_seq",
            [status, output_json, error_json, _when(now), _uuid(fence.run_id), fence.token],
        )
        row = cursor.fetchone()
        if row is None:
            raise LeaseLost(f"run {fence.run_id} is no longer held with token {fence.token}")
        _insert_event(cursor, fence.run_id, row[0], event[0], event_json)

"""Reads and fenced writes of steps and events.

Each step is recorded in one transaction: the fencing check (the writer still holds the
run's lease), the Step row and its Event row. The SQL is written by hand because this is
the hot path: one ``ctx.step`` must cost about one commit.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from agentflow.engine.interrupts import LeaseLost, unavailable_as_interrupt
from agentflow.engine.ports import publisher
from agentflow.engine.serialize import dumps, loads
from agentflow.gates.redaction import redact_json, redact_text
from agentflow.gates.sealing import protect, reveal
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
    rate_slot: datetime | None
    sealed_output: str | None = None

    def __post_init__(self) -> None:
        if self.sealed_output:
            self.output = reveal(self.output, self.sealed_output)


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
        "rate_slot",
        "sealed_output",
    )
    return {row[1]: StepRecord(*row) for row in rows}


def db_uuid(value: UUID) -> Any:
    """A run id as this database stores it (SQLite keeps UUIDs as hex text)."""
    return Run._meta.pk.get_db_prep_value(value, connection)


def db_when(value: datetime | None) -> Any:
    """A datetime as this database takes it in raw SQL."""
    return connection.ops.adapt_datetimefield_value(value)


def same_name(recorded: str, asked: str) -> bool:
    """Whether a step's stored name is the name the code asks for.

    Names are stored redacted, so the recorded one matches the asked name or its redacted
    form (the plain comparison also keeps rows written before names were redacted).
    """
    return recorded == asked or recorded == redact_text(asked)


def _record_json(value: Any, what: str) -> str | None:
    """Redacted JSON of a record the runtime writes itself (an error, an event): never refused."""
    return None if value is None else redact_json(dumps(value, what=what, limited=False))


def _announce(run_id: UUID, seq: int, type_: str, data_json: str | None) -> None:
    """Publish a committed event live (the redacted JSON that was stored)."""
    publisher().publish(run_id, seq, type_, data_json)


def _fence_sql(with_event: bool) -> str:
    """A CTE ``fence`` with one row (the next event seq) only if the lease still holds."""
    if with_event:
        return (
            f"fence AS (UPDATE {RUN} SET event_seq = event_seq + 1 "
            "WHERE id = %s AND lease_token = %s AND status = 'running' RETURNING event_seq)"
        )
    return (
        f"fence AS (SELECT event_seq FROM {RUN} "
        "WHERE id = %s AND lease_token = %s AND status = 'running')"
    )


EVENT_COLUMNS = "(run_id, seq, type, data, created_at)"


def _insert_event(cursor: Any, run_id: UUID, seq: int, type_: str, data_json: str) -> None:
    cursor.execute(
        f"INSERT INTO {EVENT} {EVENT_COLUMNS} VALUES (%s, %s, %s, %s, %s)",
        [db_uuid(run_id), seq, type_, data_json, db_when(timezone.now())],
    )
    transaction.on_commit(lambda: _announce(run_id, seq, type_, data_json), robust=True)


def _next_seq(cursor: Any, run_id: UUID) -> int:
    cursor.execute(
        f"UPDATE {RUN} SET event_seq = event_seq + 1 WHERE id = %s RETURNING event_seq",
        [db_uuid(run_id)],
    )
    return cursor.fetchone()[0]


def _write(
    fence: Fence,
    write: str,
    values: list[Any],
    event: tuple[str, dict[str, Any]] | None,
) -> tuple[Any, ...]:
    """Run ``write`` (reading the CTE ``fence``, returning one row) and the event, atomically.

    PostgreSQL does it all in one statement: one round trip, one commit. Elsewhere
    (SQLite) it takes one transaction of two or three statements.
    """
    if event:  # an agent's own event type (ctx.emit) is its data too
        event = (redact_text(event[0]), event[1])
    event_json = _record_json(event[1], f"event {event[0]}") if event else None
    fence_values = [db_uuid(fence.run_id), fence.token]
    with unavailable_as_interrupt(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            sql = f"WITH {_fence_sql(bool(event))}, written AS ({write})"
            params = [*fence_values, *values]
            if event:
                sql += (
                    f", evented AS (INSERT INTO {EVENT} {EVENT_COLUMNS} "
                    "SELECT %s, fence.event_seq, %s, %s, %s FROM fence, written)"
                )
                params += [db_uuid(fence.run_id), event[0], event_json, db_when(timezone.now())]
            cursor.execute(f"{sql} SELECT written.*, fence.event_seq FROM written, fence", params)
            row = cursor.fetchone()
            if row is not None and event:
                seq, row = row[-1], row[:-1]
                transaction.on_commit(
                    lambda: _announce(fence.run_id, seq, event[0], event_json), robust=True
                )
            elif row is not None:
                row = row[:-1]
        else:
            with transaction.atomic():
                cursor.execute(f"WITH {_fence_sql(False)} {write}", [*fence_values, *values])
                row = cursor.fetchone()
                if row is not None and event:
                    seq = _next_seq(cursor, fence.run_id)
                    _insert_event(cursor, fence.run_id, seq, event[0], event_json)
    if row is None:
        raise LeaseLost(f"run {fence.run_id} is no longer held with token {fence.token}")
    return row


STEP_COLUMNS = (
    "run_id",
    "position",
    "index",
    "kind",
    "name",
    "status",
    "args",
    "args_hash",
    "output",
    "error",
    "attempts",
    "idempotency_key",
    "started_at",
    "finished_at",
    "wake_at",
    "input_tokens",
    "output_tokens",
    "cost",
    "rate_slot",
    "dispatched_at",
    "sealed_args",
    "sealed_output",
)


@functools.cache
def _insert_step_sql(vendor: str) -> str:
    """The step INSERT for this database, built once (quoting names is not free)."""
    columns = ", ".join(connection.ops.quote_name(c) for c in STEP_COLUMNS)
    placeholders = ", ".join(["%s"] * len(STEP_COLUMNS))
    return f"INSERT INTO {STEP} ({columns}) SELECT {placeholders} FROM fence RETURNING id, output"


def _stored_output(output_json: str | None, stored: Any, sealed: str | None) -> Any:
    """What the agent sees: the real value where it was sealed, else what the database holds.

    Either way it is the same now and on replay (jsonb, for one, reorders object keys).
    """
    return loads(output_json) if sealed else loads(stored)


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
    rate_slot: datetime | None = None,
    event: tuple[str, dict[str, Any]] | None = None,
) -> tuple[int, Any]:
    """Record a new step (and its event) if the lease still holds; return (id, stored output).

    The output comes back as the database stores it, so the agent sees the same value
    now and on every replay (PostgreSQL's jsonb, for one, reorders object keys).
    """
    stored_output, sealed_output = protect(output_json)
    values = [
        db_uuid(fence.run_id),
        position,
        None,
        kind,
        redact_text(name),  # an approval's title, an event type: both may hold secrets
        status,
        redact_json(args_json),
        args_hash,
        stored_output,
        _record_json(error, f"error of step {position}"),
        attempts,
        key,
        db_when(started_at),
        db_when(finished_at),
        db_when(wake_at),
        0,
        0,
        0,
        db_when(rate_slot),
        None,
        None,
        sealed_output,
    ]
    write = _insert_step_sql(connection.vendor)
    try:
        step_id, output = _write(fence, write, values, event)
    except IntegrityError as exc:
        # Another holder recorded this position first: this writer is stale.
        raise LeaseLost(
            f"position {position} of run {fence.run_id} was recorded by another worker"
        ) from exc
    return step_id, _stored_output(output_json, output, sealed_output)


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
    rate_slot: datetime | None = None,
    event: tuple[str, dict[str, Any]] | None = None,
) -> Any:
    """Move a step to a new status (and write its event) if the lease still holds."""
    write = (
        f"UPDATE {STEP} SET status = %s, output = %s, sealed_output = %s, error = %s, "
        "attempts = COALESCE(%s, attempts), finished_at = %s, wake_at = %s, rate_slot = %s "
        "WHERE id = %s AND EXISTS (SELECT 1 FROM fence) RETURNING id, output"
    )
    stored_output, sealed_output = protect(output_json)
    values = [
        status,
        stored_output,
        sealed_output,
        _record_json(error, f"error of step {step_id}"),
        attempts,
        db_when(finished_at),
        db_when(wake_at),
        db_when(rate_slot),
        step_id,
    ]
    _, output = _write(fence, write, values, event)
    return _stored_output(output_json, output, sealed_output)


def append_event(run_id: UUID, type_: str, data: dict[str, Any]) -> int:
    """Write an event for a writer that holds no lease (start, signal, cancel); return its seq.

    Taking the sequence number locks the run row until commit, so events commit in
    sequence order and a reader that resumes after seq N misses nothing.
    """
    data_json = _record_json(data, f"event {type_}")
    with transaction.atomic(), connection.cursor() as cursor:
        seq = _next_seq(cursor, run_id)
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
    error_json = _record_json(error, "run error")
    event_json = _record_json(event[1], f"event {event[0]}")
    output_json = redact_json(output_json)
    now = timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {RUN} SET status = %s, output = %s, error = %s, finished_at = %s, "
            "lease_expires_at = NULL, lease_owner = '', wait_reason = '', wake_at = NULL, "
            "event_seq = event_seq + 1 "
            "WHERE id = %s AND lease_token = %s AND status = 'running' RETURNING event_seq",
            [status, output_json, error_json, db_when(now), db_uuid(fence.run_id), fence.token],
        )
        row = cursor.fetchone()
        if row is None:
            raise LeaseLost(f"run {fence.run_id} is no longer held with token {fence.token}")
        _insert_event(cursor, fence.run_id, row[0], event[0], event_json)

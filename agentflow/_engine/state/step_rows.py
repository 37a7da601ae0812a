"""A run's top-level steps: fenced writes of their rows (with their events) and history.

Each step is recorded in one statement on PostgreSQL: the fencing check (the writer still
holds the run's lease), the Step row and its Event row. The SQL is written by hand because
this is the hot path: one ``ctx.step`` must cost about one commit. Rows are built from one
column list keyed by name (``step_values``); statuses come from the model enums.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db import IntegrityError

from agentflow._engine.interrupts import LeaseLost, unavailable_as_interrupt
from agentflow._engine.serialize import loads, shortened
from agentflow._engine.state import sql
from agentflow._engine.state.outbox import (
    EVENT_COLUMNS,
    announce,
    insert_event,
    next_seq,
    record_json,
)
from agentflow._engine.state.sql import EVENT, RUN, STEP, UNSET, Unset, db_uuid, db_when
from agentflow._guardrails.redaction import REPLACEMENT, redact_json, redact_text
from agentflow._guardrails.sealing import protect, reveal
from agentflow.models import Run, Step, clock


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
    # What the code asked for when it last matched this record (``Journal.take``'s memo).
    memo: Any = None

    def __post_init__(self) -> None:
        if self.sealed_output:
            self.output = reveal(self.output, self.sealed_output)

    @property
    def finished(self) -> bool:
        return self.status in Step.FINISHED


RECORD_FIELDS = (
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


def load_history(run_id: UUID, *, after: int = -1) -> dict[int, StepRecord]:
    """The run's top-level steps by position (those after ``after`` only), in one query."""
    rows = Step.objects.filter(run_id=run_id, index__isnull=True).order_by()
    if after >= 0:
        rows = rows.filter(position__gt=after)
    return {row[1]: StepRecord(*row) for row in rows.values_list(*RECORD_FIELDS)}


def same_name(recorded: str, asked: str) -> bool:
    """Whether a step's stored name is the name the code asks for.

    Names are stored redacted, so where the recorded one says ``[redacted]`` the asked one
    must have something, and the same text around it. That is compared without redacting
    the asked name again: replaying a history never pays for redaction. (The secret is not
    stored, so it cannot be compared; the args hash covers the real arguments.)
    """
    if recorded == asked:
        return True
    parts = recorded.split(REPLACEMENT)
    if len(parts) == 1:  # nothing was redacted: the names differ
        return False
    head, *middle, tail = parts
    stop = len(asked) - len(tail)
    if not (asked.startswith(head) and asked.endswith(tail)) or stop <= len(head):
        return False
    at = len(head)  # each [redacted] stood for at least one character: find the next part
    for part in middle:  # after a gap; leftmost is enough, as every gap may be any length
        found = asked.find(part, at + 1, stop - 1)
        if found < 0:
            return False
        at = found + len(part)
    return stop > at


def recorded_args(step_id: int) -> str:
    """A recorded step's arguments as stored (redacted) JSON, shortened, for messages."""
    args = Step.objects.filter(id=step_id).values_list("args", flat=True).first()
    return shortened(json.dumps(args, sort_keys=True, default=str))


def _fence_sql(with_event: bool) -> str:
    """A CTE ``fence`` with one row (the next event seq) only if the lease still holds."""
    running = sql.literal(Run.Status.RUNNING)
    if with_event:
        return (
            f"fence AS (UPDATE {RUN} SET event_seq = event_seq + 1 "
            f"WHERE id = %s AND lease_token = %s AND status IN {running} RETURNING event_seq)"
        )
    return (
        f"fence AS (SELECT event_seq FROM {RUN} "
        f"WHERE id = %s AND lease_token = %s AND status IN {running})"
    )


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
    with unavailable_as_interrupt("redacting an event"):  # patterns may be re-read
        if event:  # an agent's own event type (ctx.emit) is its data too
            event = (redact_text(event[0]), event[1])
        event_json = record_json(event[1], f"event {event[0]}") if event else None
    fence_values = [db_uuid(fence.run_id), fence.token]
    with unavailable_as_interrupt(), sql.cursor() as cursor:
        if sql.postgres():
            statement = f"WITH {_fence_sql(bool(event))}, written AS ({write})"
            params = [*fence_values, *values]
            if event:
                statement += (
                    f", evented AS (INSERT INTO {EVENT} {EVENT_COLUMNS} "
                    "SELECT %s, fence.event_seq, %s, %s, %s FROM fence, written)"
                )
                params += [db_uuid(fence.run_id), event[0], event_json, db_when(clock.now())]
            cursor.execute(
                f"{statement} SELECT written.*, fence.event_seq FROM written, fence", params
            )
            row = cursor.fetchone()
            if row is not None:
                seq, row = row[-1], row[:-1]
                if event:
                    announce(fence.run_id, seq, event[0], event_json)
        else:
            with sql.atomic():
                cursor.execute(f"WITH {_fence_sql(False)} {write}", [*fence_values, *values])
                row = cursor.fetchone()
                if row is not None and event:
                    seq = next_seq(cursor, fence.run_id)
                    insert_event(cursor, fence.run_id, seq, event[0], event_json)
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
STEP_DEFAULTS: dict[str, Any] = {
    "index": None,
    "args_hash": "",
    "output": None,
    "error": None,
    "attempts": 0,
    "idempotency_key": "",
    "started_at": None,
    "finished_at": None,
    "wake_at": None,
    "input_tokens": 0,
    "output_tokens": 0,
    "cost": 0,
    "rate_slot": None,
    "dispatched_at": None,
    "sealed_args": None,
    "sealed_output": None,
}
DATETIME_COLUMNS = {"started_at", "finished_at", "wake_at", "rate_slot", "dispatched_at"}


def step_values(**columns: Any) -> list[Any]:
    """One step row's values in ``STEP_COLUMNS`` order, from columns given by name.

    ``run_id``, ``position``, ``kind``, ``name``, ``status`` and ``args`` are required; the
    rest default to an empty step. Datetimes are adapted for the database here.
    """
    unknown = set(columns) - set(STEP_COLUMNS)
    if unknown:
        raise TypeError(f"not step columns: {', '.join(sorted(unknown))}")
    row = {**STEP_DEFAULTS, **columns}
    connection = sql.connection()
    adapt = connection.ops.adapt_datetimefield_value
    for column in DATETIME_COLUMNS:
        row[column] = adapt(row[column])
    row["run_id"] = Run._meta.pk.get_db_prep_value(row["run_id"], connection)
    return [row[column] for column in STEP_COLUMNS]


@functools.cache
def _step_columns(alias: str) -> str:
    """The quoted column list for this database, built once (quoting names is not free)."""
    return ", ".join(sql.quote(column) for column in STEP_COLUMNS)


def step_columns() -> str:
    return _step_columns(sql.alias())


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
    with unavailable_as_interrupt("redacting a step"):  # patterns may be re-read
        stored_output, sealed_output = protect(output_json)
        stored_name, stored_args = redact_text(name), redact_json(args_json)
        stored_error = record_json(error, f"error of step {position}")
    values = step_values(
        run_id=fence.run_id,
        position=position,
        kind=kind,
        name=stored_name,  # an approval's title, an event type: both may hold secrets
        status=status,
        args=stored_args,
        args_hash=args_hash,
        output=stored_output,
        error=stored_error,
        attempts=attempts,
        idempotency_key=key,
        started_at=started_at,
        finished_at=finished_at,
        wake_at=wake_at,
        rate_slot=rate_slot,
        sealed_output=sealed_output,
    )
    placeholders = ", ".join(["%s"] * len(STEP_COLUMNS))
    write = (
        f"INSERT INTO {STEP} ({step_columns()}) SELECT {placeholders} FROM fence "
        "RETURNING id, output"
    )
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
    output_json: str | Unset | None = UNSET,
    redacted_json: str | None = None,
    error: dict[str, Any] | Unset | None = UNSET,
    attempts: int | Unset = UNSET,
    finished_at: datetime | Unset | None = UNSET,
    wake_at: datetime | Unset | None = UNSET,
    rate_slot: datetime | Unset | None = UNSET,
    usage: tuple[int, int, Decimal] | Unset = UNSET,
    event: tuple[str, dict[str, Any]] | None = None,
) -> Any:
    """Move a step to ``status`` (and write its event) if the lease still holds.

    Only the columns passed change; ``UNSET`` (the default) leaves one as it is, ``None``
    clears it. ``usage`` is a model call's (input tokens, output tokens, cost).
    ``redacted_json``: the output's stored form, built from values redacted when they were
    recorded (see ``_guardrails.sealing.protect``). Returns the stored output (None when
    ``output_json`` is not passed).
    """
    changes: dict[str, Any] = {"status": status}
    stored_output = sealed_output = None
    with unavailable_as_interrupt("redacting a step"):  # patterns may be re-read
        if output_json is not UNSET:
            stored_output, sealed_output = protect(output_json, redacted=redacted_json)
            changes |= {"output": stored_output, "sealed_output": sealed_output}
        if error is not UNSET:
            changes["error"] = record_json(error, f"error of step {step_id}")
    if attempts is not UNSET:
        changes["attempts"] = attempts
    if usage is not UNSET:
        input_tokens, output_tokens, cost = usage
        changes |= {"input_tokens": input_tokens, "output_tokens": output_tokens, "cost": str(cost)}
    for column, value in (
        ("finished_at", finished_at),
        ("wake_at", wake_at),
        ("rate_slot", rate_slot),
    ):
        if value is not UNSET:
            changes[column] = db_when(value)
    assignments = ", ".join(f"{column} = %s" for column in changes)
    write = (
        f"UPDATE {STEP} SET {assignments} "
        "WHERE id = %s AND EXISTS (SELECT 1 FROM fence) RETURNING id, output"
    )
    _, output = _write(fence, write, [*changes.values(), step_id], event)
    if output_json is UNSET:
        return None
    return _stored_output(output_json, output, sealed_output)


# A fork's copy of a step keeps what it recorded; what belongs to the source run's
# progress (its timer, rate slot and last dispatch) starts empty.
COPY_RESET = ("run_id", "wake_at", "rate_slot", "dispatched_at")
COPY_KEPT = tuple(column for column in STEP_COLUMNS if column not in COPY_RESET)


def copy_steps(source_id: UUID, target_id: UUID, at: int) -> None:
    """Copy the steps before position ``at`` (and their children) in one statement."""
    quote = sql.quote
    kept = ", ".join(quote(column) for column in COPY_KEPT)
    with sql.connection().cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {STEP} ({quote('run_id')}, {kept}) "
            f"SELECT %s, {kept} FROM {STEP} WHERE run_id = %s AND position < %s",
            [db_uuid(target_id), db_uuid(source_id), at],
        )

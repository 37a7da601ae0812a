"""The SQL of steps and events: fenced step writes, fan-out children, joins, history.

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

from agentflow.engine import sql
from agentflow.engine.interrupts import LeaseLost, unavailable_as_interrupt
from agentflow.engine.ports import publisher
from agentflow.engine.serialize import dumps, loads, shortened
from agentflow.engine.sql import EVENT, RUN, STEP, UNSET, Unset, db_uuid, db_when
from agentflow.gates.redaction import REPLACEMENT, redact_json, redact_text
from agentflow.gates.sealing import protect, reveal
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


def record_json(value: Any, what: str) -> str | None:
    """Redacted JSON of a record the runtime writes itself (an error, an event): never refused."""
    return None if value is None else redact_json(dumps(value, what=what, limited=False))


def announce(run_id: UUID, seq: int, type_: str, data_json: str | None) -> None:
    """Publish an event live once it commits (the redacted JSON that was stored)."""
    sql.on_commit(lambda: publisher().publish(run_id, seq, type_, data_json))


EVENT_COLUMNS = "(run_id, seq, type, data, created_at)"


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


def _next_seq(cursor: Any, run_id: UUID) -> int:
    cursor.execute(
        f"UPDATE {RUN} SET event_seq = event_seq + 1 WHERE id = %s RETURNING event_seq",
        [db_uuid(run_id)],
    )
    return cursor.fetchone()[0]


def insert_event(cursor: Any, run_id: UUID, seq: int, type_: str, data_json: str | None) -> None:
    """Insert an event whose seq the caller took (SQLite's path of a fenced write)."""
    cursor.execute(
        f"INSERT INTO {EVENT} {EVENT_COLUMNS} VALUES (%s, %s, %s, %s, %s)",
        [db_uuid(run_id), seq, type_, data_json, db_when(clock.now())],
    )
    announce(run_id, seq, type_, data_json)


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
                    seq = _next_seq(cursor, fence.run_id)
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
    recorded (see ``gates.sealing.protect``). Returns the stored output (None when
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


def append_event(run_id: UUID, type_: str, data: dict[str, Any]) -> int:
    """Write an event for a writer that holds no lease (start, signal, cancel); return its seq.

    Taking the sequence number locks the run row until commit, so events commit in
    sequence order and a reader that resumes after seq N misses nothing. One statement on
    PostgreSQL, so it opens no savepoint inside the caller's transaction.
    """
    data_json = record_json(data, f"event {type_}")
    with sql.cursor() as cursor:
        if sql.postgres():
            cursor.execute(
                f"WITH seq AS (UPDATE {RUN} SET event_seq = event_seq + 1 WHERE id = %s "
                f"RETURNING id, event_seq) INSERT INTO {EVENT} {EVENT_COLUMNS} "
                "SELECT id, event_seq, %s, %s, %s FROM seq RETURNING seq",
                [db_uuid(run_id), type_, data_json, db_when(clock.now())],
            )
            seq = cursor.fetchone()[0]
            announce(run_id, seq, type_, data_json)
            return seq
        with sql.atomic():
            seq = _next_seq(cursor, run_id)
            insert_event(cursor, run_id, seq, type_, data_json)
    return seq


# -- fan-out children -------------------------------------------------------------------


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

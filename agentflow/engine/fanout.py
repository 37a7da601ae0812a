"""Fan-out: a parent step at one position, its children at (position, index), one join.

The database decides when a fan-out is complete: when no child is open. Each child, once
its outcome is committed, looks for an open sibling (a probe of a partial index of open
children) and joins if there is none; the chord body and the reconciler join the same
way. The join is a conditional update that only one caller can win, so the run is
re-advanced exactly once whether the chord body fires once, twice or never.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from agentflow.engine import store
from agentflow.engine.ports import dispatcher
from agentflow.engine.serialize import dumps
from agentflow.gates.redaction import redact_json
from agentflow.gates.sealing import protect, reveal
from agentflow.models import Run, Step

STEP = Step._meta.db_table
# Served by the partial index agentflow_step_open_child.
OPEN_CHILD = (
    f"SELECT 1 FROM {STEP} o WHERE o.run_id = %s AND o.position = %s "
    f"AND o.{connection.ops.quote_name('index')} IS NOT NULL "
    "AND o.status IN ('pending', 'scheduled', 'running', 'waiting')"
)


@dataclass(frozen=True)
class Child:
    """One call of a fan-out, as the agent asked for it."""

    tool: str
    args_json: str
    error: dict[str, Any] | None = None  # set when a gate refused it up front
    approval: str | None = None  # why it waits for a person before it may run


def create(
    fence: store.Fence,
    *,
    position: int,
    kind: str,
    name: str,
    args_json: str,
    args_hash: str,
    children: list[Child],
) -> None:
    """Record the parent and all children (one bulk insert), then dispatch the chord."""
    now = timezone.now()
    with transaction.atomic():
        store.insert_step(
            fence,
            position=position,
            kind=kind,
            name=name,
            args_json=args_json,
            args_hash=args_hash,
            status=Step.Status.WAITING,
            started_at=now,
            key=f"{fence.run_id}:{position}",
            event=(
                "step.started",
                {"position": position, "kind": kind, "name": name, "children": len(children)},
            ),
        )
        step_ids, waiting = _insert_children(fence.run_id, position, children, now)
        if waiting:
            from agentflow.engine import approvals

            approvals.request_for_children(fence.run_id, position, waiting)
        if step_ids:
            dispatcher().fan_out(fence.run_id, position, step_ids)
        else:
            join(fence.run_id, position)


BATCH = 1000


def _status(child: Child) -> str:
    if child.error is not None:
        return Step.Status.FAILED
    return Step.Status.WAITING if child.approval else Step.Status.PENDING


def _insert_children(
    run_id: UUID, position: int, children: list[Child], now: Any
) -> tuple[list[int], list[tuple[int, int, Child]]]:
    """Insert the children in multi-row INSERTs.

    Returns the ids of the runnable ones and (id, index, child) of those awaiting approval.
    """
    when = connection.ops.adapt_datetimefield_value(now)
    run = store.db_uuid(run_id)
    columns = ", ".join(connection.ops.quote_name(c) for c in store.STEP_COLUMNS)
    row = "(" + ", ".join(["%s"] * len(store.STEP_COLUMNS)) + ")"
    runnable: list[int] = []
    waiting: list[tuple[int, int, Child]] = []
    with connection.cursor() as cursor:
        for start in range(0, len(children), BATCH):
            batch = children[start : start + BATCH]
            values: list[Any] = []
            for index, child in enumerate(batch, start):
                failed = child.error is not None
                stored_args, sealed_args = protect(child.args_json)
                values += [
                    run,
                    position,
                    index,
                    "call",
                    child.tool,
                    _status(child),
                    stored_args,
                    "",
                    None,  # output
                    redact_json(dumps(child.error, what="child error", limited=False))
                    if failed
                    else None,
                    0,
                    f"{run_id}:{position}:{index}",
                    when if failed else None,  # started_at: set when a worker claims it
                    when if failed else None,  # finished_at
                    None,  # wake_at
                    0,
                    0,
                    0,
                    None,  # rate_slot
                    when,  # dispatched_at
                    sealed_args,
                    None,  # sealed_output
                ]
            cursor.execute(
                f"INSERT INTO {STEP} ({columns}) VALUES {', '.join([row] * len(batch))} "
                f"RETURNING id, status, {connection.ops.quote_name('index')}",
                values,
            )
            for step_id, status, index in cursor.fetchall():
                if status == Step.Status.PENDING:
                    runnable.append(step_id)
                elif status == Step.Status.WAITING:
                    waiting.append((step_id, index, children[index]))
    return runnable, waiting


def any_open(run_id: UUID, position: int) -> bool:
    """Whether a child of the fan-out is still pending, scheduled, running or waiting."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT EXISTS ({OPEN_CHILD})", [store.db_uuid(run_id), position])
        return bool(cursor.fetchone()[0])


def results(run_id: UUID, position: int) -> list[tuple[str, Any, dict[str, Any] | None]]:
    """(status, output, error) of each child, in item order."""
    rows = Step.objects.filter(run_id=run_id, position=position, index__isnull=False).order_by(
        "index"
    )
    return [
        (status, reveal(output, sealed), error)
        for status, output, sealed, error in rows.values_list(
            "status", "output", "sealed_output", "error"
        )
    ]


def join(run_id: UUID, position: int) -> bool:
    """Close a complete fan-out and wake its run; True only for the one caller that did."""
    now = timezone.now()
    quote = connection.ops.quote_name
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {STEP} SET finished_at = %s, status = CASE WHEN EXISTS ("
            f"  SELECT 1 FROM {STEP} c WHERE c.run_id = %s AND c.position = %s"
            f"  AND c.{quote('index')} IS NOT NULL AND c.status = 'failed'"
            ") THEN 'failed' ELSE 'succeeded' END "
            f"WHERE run_id = %s AND position = %s AND {quote('index')} IS NULL "
            f"AND status = 'waiting' AND NOT EXISTS ({OPEN_CHILD}) RETURNING status, kind, name",
            [
                connection.ops.adapt_datetimefield_value(now),
                *([store.db_uuid(run_id), position] * 3),
            ],
        )
        row = cursor.fetchone()
        if row is None:
            return False
        status, kind, name = row
        woken = Run.objects.filter(id=run_id, status__in=Run.ACTIVE).update(
            wake_seq=F("wake_seq") + 1, wake_at=now
        )
        store.append_event(
            run_id,
            "step.completed",
            {"position": position, "kind": kind, "name": name, "joined": True, "status": status},
        )
        if woken:
            dispatcher().advance(run_id)
    return True

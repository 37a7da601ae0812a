"""Fan-out: a parent step at one position, its children at (position, index), one join.

The database decides when a fan-out is complete: the parent counts the children still
open (``children_left``), each finishing child takes one off in the same statement that
records it, and the join is a conditional update that only one caller can win. So the
run is re-advanced exactly once whether the chord body fires once, twice or never.
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
from agentflow.engine.serialize import loads
from agentflow.models import Run, Step

STEP = Step._meta.db_table


@dataclass(frozen=True)
class Child:
    """One call of a fan-out, as the agent asked for it."""

    tool: str
    args_json: str
    error: dict[str, Any] | None = None  # set when its arguments were refused up front


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
    runnable = sum(child.error is None for child in children)
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
            children_left=runnable,
            event=(
                "step.started",
                {"position": position, "kind": kind, "name": name, "children": len(children)},
            ),
        )
        rows = Step.objects.bulk_create(
            [
                Step(
                    run_id=fence.run_id,
                    position=position,
                    index=index,
                    kind="call",
                    name=child.tool,
                    args=loads(child.args_json),
                    idempotency_key=f"{fence.run_id}:{position}:{index}",
                    status=Step.Status.PENDING if child.error is None else Step.Status.FAILED,
                    error=child.error,
                    started_at=now,
                    dispatched_at=now,
                    finished_at=None if child.error is None else now,
                )
                for index, child in enumerate(children)
            ],
            batch_size=1000,
        )
        step_ids = [row.id for row in rows if row.status == Step.Status.PENDING]
        if step_ids:
            dispatcher().fan_out(fence.run_id, position, step_ids)
        else:
            join(fence.run_id, position)


def results(run_id: UUID, position: int) -> list[tuple[str, Any, dict[str, Any] | None]]:
    """(status, output, error) of each child, in item order."""
    rows = Step.objects.filter(run_id=run_id, position=position, index__isnull=False).order_by(
        "index"
    )
    return list(rows.values_list("status", "output", "error"))


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
            "AND status = 'waiting' AND children_left = 0 RETURNING status, kind, name",
            [connection.ops.adapt_datetimefield_value(now), *([store._uuid(run_id), position] * 2)],
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

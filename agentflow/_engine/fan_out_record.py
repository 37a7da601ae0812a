"""Fan-out: a parent step at one position, its children at (position, index), one join.

The database decides when a fan-out is complete: when no child is open. Each child, once
its outcome is committed, looks for an open sibling (a probe of a partial index of open
children) and joins if there is none; the chord body and the reconciler join the same
way. The join is a conditional update that only one caller can win, so the run is
re-advanced exactly once whether the chord body fires once, twice or never.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from agentflow._definitions import ToolDefinition
from agentflow._engine.call_ids import CallKey
from agentflow._engine.interrupts import unavailable_as_interrupt
from agentflow._engine.ports import dispatcher
from agentflow._engine.serialize import dumps
from agentflow._engine.state import child_rows, run_rows, sql
from agentflow._guardrails import admission
from agentflow._guardrails.limits import limits_for
from agentflow._guardrails.redaction import redact_json
from agentflow._guardrails.sealing import protect, reveal
from agentflow.models import Event, Step, clock

if TYPE_CHECKING:
    from agentflow._engine.journal import Entry, Journal


@dataclass(frozen=True)
class Child:
    """One call of a fan-out, as the agent asked for it."""

    tool: ToolDefinition
    args_json: str
    error: dict[str, Any] | None = None  # set when a gate refused it up front
    approval: str | None = None  # why it waits for a person before it may run

    @property
    def status(self) -> str:
        if self.error is not None:
            return Step.Status.FAILED
        return Step.Status.WAITING if self.approval else Step.Status.PENDING


def create(journal: Journal, entry: Entry, children: list[Child]) -> list[tuple[int, int, Child]]:
    """Record the parent and all children (bulk inserts), then dispatch the runnable ones.

    Returns (id, index, child) of the children that wait for an approval; the caller
    creates their approvals in the same transaction.
    """
    now, run_id = clock.now(), journal.run.id
    with sql.atomic():
        journal.record(
            entry,
            status=Step.Status.WAITING,
            started_at=now,
            event=entry.event(Event.Type.STEP_STARTED, children=len(children)),
        )
        rows = [_row(run_id, entry.position, index, child, now) for index, child in
                enumerate(children)]  # fmt: skip
        _book_rate_slots(journal.run, children, rows)
        runnable: dict[str | None, list[int]] = defaultdict(list)
        waiting: list[tuple[int, int, Child]] = []
        send = dispatcher()
        for step_id, status, index in child_rows.insert_children(rows):
            queue = children[index].tool.queue
            if status == Step.Status.PENDING:
                runnable[queue].append(step_id)
            elif status == Step.Status.SCHEDULED:  # at its rate slot
                send.run_child(step_id, eta=rows[index]["wake_at"], queue=queue)
            elif status == Step.Status.WAITING:
                waiting.append((step_id, index, children[index]))
        for queue, step_ids in runnable.items():
            send.fan_out(run_id, entry.position, step_ids, queue=queue)
        if all(row["status"] == Step.Status.FAILED for row in rows):
            join(run_id, entry.position)
    return waiting


def _book_rate_slots(run: Any, children: list[Child], rows: list[dict[str, Any]]) -> None:
    """Book the rate slots of a rate-limited tool's children at once, in item order.

    Each such child is recorded as scheduled for its slot and sent to run then, so it is
    claimed once, when due. Claimed at once instead, every child would be refused, handed
    back and sent again one by one, a cost that makes the first ones late for their
    slots. A single child of a tool goes through the gate when it runs, as a call does.
    """
    by_tool: dict[str, list[int]] = defaultdict(list)
    for index, child in enumerate(children):
        if child.status == Step.Status.PENDING:
            by_tool[child.tool.name].append(index)
    for indexes in by_tool.values():
        if len(indexes) < 2:
            continue
        with unavailable_as_interrupt("reading policies"):
            limits = limits_for(children[indexes[0]].tool, run.agent, run.owner_id)
        with unavailable_as_interrupt("booking rate-limit slots"):
            slots = admission.book(limits, len(indexes))
        for index, slot in zip(indexes, slots, strict=False):
            rows[index].update(
                status=Step.Status.SCHEDULED,
                rate_slot=slot,
                wake_at=slot - timedelta(seconds=admission.EARLY),
            )


def _row(run_id: UUID, position: int, index: int, child: Child, now: Any) -> dict[str, Any]:
    failed = child.error is not None
    stored_args, sealed_args = protect(child.args_json)
    return {
        "run_id": run_id,
        "position": position,
        "index": index,
        "kind": Step.Kind.CALL,
        "name": child.tool.name,
        "status": child.status,
        "args": stored_args,
        "error": redact_json(dumps(child.error, what="child error", limited=False))
        if failed
        else None,
        "idempotency_key": str(CallKey(str(run_id), position, index)),
        "started_at": now if failed else None,  # else set when a worker claims it
        "finished_at": now if failed else None,
        "dispatched_at": now,
        "sealed_args": sealed_args,
    }


def any_open(run_id: UUID, position: int) -> bool:
    """Whether a child of the fan-out is still pending, scheduled, running or waiting."""
    return child_rows.any_open_child(run_id, position)


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
    joined, woken = run_rows.join_fan_out(run_id, position)
    if woken:
        dispatcher().advance(run_id)
    return joined

"""``ctx.wait_for``: consume a signal durably, or park the run until one arrives."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agentflow.engine import store
from agentflow.engine.interrupts import Suspend
from agentflow.engine.serialize import dumps, error_record
from agentflow.gates.redaction import redact_text
from agentflow.gates.sealing import reveal
from agentflow.models import Signal, Step

if TYPE_CHECKING:
    from agentflow.engine.context import RunContext


def _consume(run_id: Any, name: str, position: int) -> tuple[bool, Any]:
    """Mark the oldest unconsumed signal ``name`` as consumed at ``position``."""
    signal = (
        Signal.objects.select_for_update()
        # Names are stored redacted; a plain match keeps older rows (and patterns) working.
        .filter(Q(name=name) | Q(name=redact_text(name)), run_id=run_id)
        .filter(consumed_position__isnull=True)
        .order_by("id")
        .first()
    )
    if signal is None:
        return False, None
    signal.consumed_position = position
    signal.save(update_fields=["consumed_position"])
    return True, reveal(signal.data, signal.sealed_data)


def wait(
    ctx: RunContext,
    position: int,
    name: str,
    timeout: float | None,
    args_json: str,
    digest: str,
    record: store.StepRecord | None,
) -> Any:
    """Return the signal's data, raise ``TimeoutError``, or suspend until one of them."""
    fence, now = ctx._fence, timezone.now()
    event = ctx._event
    timed_out: TimeoutError | None = None
    with store.unavailable_as_interrupt(), transaction.atomic():
        found, data = _consume(fence.run_id, name, position)
        if found:
            output_json = dumps(data, what=f"data of signal {name}")
            done = event("step.completed", position, "wait", name)
            if record is None:
                _, output = ctx._record(
                    position,
                    "wait",
                    name,
                    args_json,
                    digest,
                    status=Step.Status.SUCCEEDED,
                    output_json=output_json,
                    started_at=now,
                    finished_at=now,
                    event=done,
                )
                return output
            return store.update_step(
                fence,
                record.id,
                status=Step.Status.SUCCEEDED,
                output_json=output_json,
                finished_at=now,
                wake_at=record.wake_at,
                event=done,
            )
        if record is None:
            deadline = None if timeout is None else now + timedelta(seconds=timeout)
            ctx._record(
                position,
                "wait",
                name,
                args_json,
                digest,
                status=Step.Status.WAITING,
                started_at=now,
                wake_at=deadline,
                event=event(
                    "step.waiting",
                    position,
                    "wait",
                    name,
                    wake_at=deadline.isoformat() if deadline else None,
                ),
            )
        else:
            deadline = record.wake_at
            if deadline is not None and deadline <= now:
                timed_out = TimeoutError(
                    f"No signal '{name}' reached run {ctx.run.id} within {timeout:g}s "
                    f"(position {position}). Send it with agentflow.signal(run, {name!r}, data) "
                    "in time, or catch TimeoutError in the agent."
                )
                store.update_step(
                    fence,
                    record.id,
                    status=Step.Status.FAILED,
                    error=error_record(timed_out),
                    finished_at=now,
                    wake_at=deadline,
                    event=event("step.failed", position, "wait", name, error=str(timed_out)),
                )
    if timed_out is not None:
        raise timed_out
    until = f" until {deadline.isoformat()}" if deadline else ""
    raise Suspend(f"waiting for signal '{name}'{until} (position {position})", deadline)

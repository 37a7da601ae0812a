"""``ctx.wait_for``: consume a signal durably, or park the run until one arrives."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Q

from agentflow._engine.durations import check_seconds
from agentflow._engine.interrupts import Suspend, unavailable_as_interrupt
from agentflow._engine.journal import Journal
from agentflow._engine.serialize import check_text, dumps, error_record
from agentflow._engine.state import sql
from agentflow._guardrails.redaction import redact_text
from agentflow._guardrails.sealing import reveal
from agentflow.models import Event, Signal, Step, clock

MAX_SIGNAL_NAME_CHARS = Signal._meta.get_field("name").max_length


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


def wait_for(journal: Journal, name: str, timeout: float | None) -> Any:
    """Return the signal's data, raise ``TimeoutError``, or suspend until one of them."""
    check_text(name, what="the signal name of ctx.wait_for", max_chars=MAX_SIGNAL_NAME_CHARS)
    if timeout is not None:
        check_seconds(timeout, lambda: f"ctx.wait_for({name!r}) timeout at run {journal.run.id}")
    args_json = dumps({"name": name, "timeout": timeout}, what="wait_for arguments", sort_keys=True)
    entry = journal.take(Step.Kind.WAIT, name, args_json)
    record, now = entry.record, clock.now()
    if entry.finished:
        return journal.replayed(record)
    timed_out: TimeoutError | None = None
    with unavailable_as_interrupt(), sql.atomic():
        found, data = _consume(journal.run.id, name, entry.position)
        if found:
            output_json = dumps(data, what=f"data of signal {name}")
            done = entry.event(Event.Type.STEP_COMPLETED)
            if record is None:
                _, output = journal.record(
                    entry,
                    status=Step.Status.SUCCEEDED,
                    output_json=output_json,
                    started_at=now,
                    finished_at=now,
                    event=done,
                )
                return output
            return journal.update(
                record.id,
                status=Step.Status.SUCCEEDED,
                output_json=output_json,
                finished_at=now,
                event=done,
            )
        if record is None:
            deadline = None if timeout is None else now + timedelta(seconds=timeout)
            journal.record(
                entry,
                status=Step.Status.WAITING,
                started_at=now,
                wake_at=deadline,
                event=entry.event(
                    Event.Type.STEP_WAITING, wake_at=deadline.isoformat() if deadline else None
                ),
            )
        else:
            deadline = record.wake_at
            if deadline is not None and deadline <= now:
                timed_out = TimeoutError(
                    f"No signal '{name}' reached run {journal.run.id} within {timeout:g}s "
                    f"(position {entry.position}). Send it with agentflow.signal(run, {name!r}, "
                    "data) in time, or catch TimeoutError in the agent."
                )
                journal.update(
                    record.id,
                    status=Step.Status.FAILED,
                    error=error_record(timed_out),
                    finished_at=now,
                    event=entry.event(Event.Type.STEP_FAILED, error=str(timed_out)),
                )
    if timed_out is not None:
        raise timed_out
    until = f" until {deadline.isoformat()}" if deadline else ""
    raise Suspend(f"waiting for signal '{name}'{until} (position {entry.position})", deadline)

"""``ctx.sleep``: a durable timer; no worker is held while it runs."""

from __future__ import annotations

from datetime import timedelta

from agentflow._engine.durations import check_seconds
from agentflow._engine.interrupts import Suspend
from agentflow._engine.journal import Journal
from agentflow._engine.serialize import dumps
from agentflow.models import Event, Step, clock


def sleep(journal: Journal, seconds: float) -> None:
    """Wait ``seconds`` (0 or less: not at all); suspend the run until the timer is due."""
    memo = (type(seconds), seconds)
    if journal.replayed_as(Step.Kind.SLEEP, memo) is not None:
        return  # a sleep that finished, asked for with these very seconds before
    known = journal.peek()
    if known is None or known.memo != memo:  # else this very value passed the check before
        check_seconds(
            seconds, lambda: f"ctx.sleep at run {journal.run.id} position {journal.position}"
        )
    entry = journal.take(
        Step.Kind.SLEEP,
        "sleep",
        lambda: dumps({"seconds": seconds}, what="sleep arguments", sort_keys=True),
        memo=memo,
    )
    record = entry.record
    if record is not None and record.status == Step.Status.SUCCEEDED:
        return
    now = clock.now()
    if record is None:
        wake_at = now + timedelta(seconds=seconds)
        done = seconds <= 0
        journal.record(
            entry,
            status=Step.Status.SUCCEEDED if done else Step.Status.WAITING,
            started_at=now,
            finished_at=now if done else None,
            wake_at=wake_at,
            event=entry.event(
                Event.Type.STEP_COMPLETED if done else Event.Type.STEP_WAITING,
                wake_at=wake_at.isoformat(),
            ),
        )
        if done:
            return
        raise Suspend(f"sleeping until {wake_at.isoformat()} (position {entry.position})", wake_at)
    if record.wake_at is not None and record.wake_at <= now:
        journal.update(
            record.id,
            status=Step.Status.SUCCEEDED,
            finished_at=now,
            event=entry.event(Event.Type.STEP_COMPLETED),
        )
        return
    raise Suspend(
        f"sleeping until {record.wake_at.isoformat()} (position {entry.position})", record.wake_at
    )

"""Bring back runs that a dead worker, a lost message or a due timer left behind, and
apply the default decision of approvals past their timeout.

Every worker process offers a pass from its heartbeat thread every RECONCILE_EVERY
seconds, and one of them takes each period's turn (``reconcile_in_turn``; and one pass
at a time across the fleet, ``reconcile_exclusively``), so recovery needs no beat. Beat,
worker start and ``manage.py agentflow recover`` are extra triggers. It only sends
wake-ups; ``advance`` decides.
"""

from __future__ import annotations

import zlib
from collections import Counter
from datetime import timedelta

from django.db.models import Exists, OuterRef, Q

from agentflow import conf
from agentflow._engine import attempts, child_runner, decisions, fan_out_record
from agentflow._engine.ports import dispatcher
from agentflow._engine.state import run_rows, sql
from agentflow._guardrails import admission, fleet
from agentflow.models import Run, Step, clock

BATCH = 1000
# The PostgreSQL advisory lock key of the reconciler (a stable number from its name).
LOCK_KEY = zlib.crc32(b"agentflow.reconcile")


def reconcile_exclusively() -> dict[str, int] | None:
    """One pass, unless another process's pass is running now (then None)."""
    with sql.exclusive(LOCK_KEY) as held:
        return reconcile() if held else None


def reconcile_in_turn() -> dict[str, int] | None:
    """The heartbeat's periodic pass: one per RECONCILE_EVERY across the fleet (None
    when another process has this period's turn), not one per worker process.

    The turn is kept in Redis; processes configured with another period take turns of
    their own. Without Redis, each process takes its own turns, as before.
    """
    every = conf.setting("RECONCILE_EVERY")
    return reconcile_exclusively() if fleet.take_turn("reconcile", every) else None


def reconcile() -> dict[str, int]:
    """Wake every run that needs it; return how many were woken, by status."""
    now = clock.now()
    quiet = now - timedelta(seconds=conf.setting("LEASE_SECONDS"))
    due = Run.objects.needing_wakeup(now, pending_before=quiet).filter(
        Q(nudged_at__isnull=True) | Q(nudged_at__lt=quiet)
    )
    rows = list(due.order_by("created_at").values_list("id", "status")[:BATCH])
    # Several reconcilers may race here; a duplicate wake-up is harmless, only wasteful.
    run_rows.mark_nudged([run_id for run_id, _ in rows], now)
    send = dispatcher()
    for run_id, _ in rows:
        send.advance(run_id)
    woken = Counter(status for _, status in rows)
    # Approvals past their timeout get their default decision (and wake their runs).
    woken["approvals_expired"] = decisions.expire_due(now)
    # Fan-outs whose children all finished but whose join was lost (e.g. the chord state
    # vanished with a Redis FLUSHALL): the database says they are complete, so join them.
    open_child = Step.objects.filter(
        run_id=OuterRef("run_id"),
        position=OuterRef("position"),
        index__isnull=False,
        status__in=Step.OPEN,
    )
    any_child = Step.objects.filter(
        run_id=OuterRef("run_id"), position=OuterRef("position"), index__isnull=False
    )
    complete = (
        Step.objects.filter(index__isnull=True, status=Step.Status.WAITING)
        # A routed ctx.call is a one-child fan-out of kind "call"; an inline call that
        # waits (an approval, a slot) has no child and is not a fan-out at all.
        .filter(Q(kind__in=Step.FAN_OUTS) | Q(Exists(any_child), kind=Step.Kind.CALL))
        .exclude(Exists(open_child))
        .values_list("run_id", "position")[:BATCH]
    )
    woken["joined"] = sum(fan_out_record.join(run_id, position) for run_id, position in complete)
    woken.update(child_runner.recover(now))
    # Concurrency slots whose holder died expire on their own; wake who waits for them.
    waiters = admission.sweep()
    attempts.wake(waiters)
    woken["slot_waiters"] = len(waiters)
    return {name: count for name, count in woken.items() if count}

"""Pause and resume: a guardrail stops a run; an operator lets it go on.

A paused run holds no lease and no worker, its fan-out children are not claimed, and
the reconciler leaves it alone. ``resume`` puts it back to waiting, wakes it, and sends
its unfinished children again.
"""

from __future__ import annotations

from uuid import UUID

from django.db.models import F

from agentflow.engine import sql, store
from agentflow.engine.attempts import queue_of
from agentflow.engine.ports import dispatcher
from agentflow.exceptions import InvalidState, RunNotFound
from agentflow.gates.redaction import redact_text
from agentflow.models import Event, Run, Step, clock


def pause_held(fence: store.Fence, reason: str) -> bool:
    """Pause a run the caller holds the lease of; False if the lease is gone."""
    with sql.atomic():
        paused = Run.objects.filter(
            id=fence.run_id, lease_token=fence.token, status=Run.Status.RUNNING
        ).update(**_paused(reason))
        if paused:
            store.append_event(fence.run_id, Event.Type.RUN_PAUSED, {"reason": reason})
    return bool(paused)


def pause(run_id: UUID, reason: str) -> bool:
    """Pause a run from outside its lease (a fan-out child); False if it is not active.

    Breaking a holder's lease is safe here: while a fan-out is open the agent cannot get
    past it, so the holder can only be replaying finished steps.
    """
    with sql.atomic():
        paused = Run.objects.filter(id=run_id, status__in=Run.ACTIVE).update(**_paused(reason))
        if paused:
            store.append_event(run_id, Event.Type.RUN_PAUSED, {"reason": reason})
    return bool(paused)


def _paused(reason: str) -> dict:
    return {
        "status": Run.Status.PAUSED,
        "wait_reason": redact_text(reason)[:500],
        "lease_owner": "",
        "lease_expires_at": None,
        "wake_at": None,
    }


def resume(run_id: UUID, *, by: str | None = None) -> None:
    """Continue a paused run: wake it and send its unfinished fan-out children again."""
    now = clock.now()
    with sql.atomic():
        resumed = Run.objects.filter(id=run_id, status=Run.Status.PAUSED).update(
            status=Run.Status.WAITING,
            wait_reason="",
            wake_at=now,
            wake_seq=F("wake_seq") + 1,
            nudged_at=None,
        )
        if not resumed:
            current = Run.objects.filter(id=run_id).values_list("status", flat=True).first()
            if current is None:
                raise RunNotFound(f"There is no run {run_id}.")
            raise InvalidState(
                f"Run {run_id} is {current}, not paused; only a paused run can be resumed."
            )
        store.append_event(run_id, Event.Type.RUN_RESUMED, {"by": by})
        children = list(
            Step.objects.filter(
                run_id=run_id, index__isnull=False, status__in=Step.CLAIMABLE
            ).values_list("id", "wake_at", "name")
        )
        Step.objects.filter(id__in=[step_id for step_id, *_ in children]).update(dispatched_at=now)
        send = dispatcher()
        send.advance(run_id)
        for step_id, wake_at, name in children:
            eta = wake_at if wake_at and wake_at > now else None
            send.run_child(step_id, eta=eta, queue=queue_of(name))

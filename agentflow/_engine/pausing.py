"""Pause and resume: a guardrail stops a run; an operator lets it go on.

A paused run holds no lease and no worker, its fan-out children are not claimed, and
the reconciler leaves it alone. ``resume`` puts it back to waiting, wakes it, and sends
its unfinished children again.
"""

from __future__ import annotations

from uuid import UUID

from agentflow._engine.attempts import queue_of
from agentflow._engine.ports import dispatcher
from agentflow._engine.state import run_actions, run_rows, step_rows
from agentflow._guardrails.limit_hit import LimitHit
from agentflow.models import clock


def pause_held(fence: step_rows.Fence, hit: LimitHit) -> bool:
    """Pause a run the caller holds the lease of; False if the lease is gone."""
    return run_rows.pause_held(fence, hit.reason, hit.as_data())


def pause(run_id: UUID, hit: LimitHit) -> bool:
    """Pause a run from outside its lease (a fan-out child); False if it is not active.

    Breaking a holder's lease is safe here: while a fan-out is open the agent cannot get
    past it, so the holder can only be replaying finished steps.
    """
    return run_rows.pause(run_id, hit.reason, hit.as_data())


def resume(run_id: UUID, *, by: str | None = None) -> None:
    """Continue a paused run: wake it and send its unfinished fan-out children again."""
    now = clock.now()
    children = run_actions.resume(run_id, by, now)
    send = dispatcher()
    send.advance(run_id)
    for step_id, wake_at, name in children:
        eta = wake_at if wake_at and wake_at > now else None
        send.run_child(step_id, eta=eta, queue=queue_of(name))

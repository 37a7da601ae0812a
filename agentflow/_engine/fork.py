"""Fork a run at a position: a new run that keeps the steps before it and re-executes the rest.

The kept steps are copied row for row (fan-out children, outputs, errors and sealed
columns included) in one INSERT ... SELECT, so a large fan-out forks in one statement.
Replay of the new run returns them as recorded; from ``at`` on, the agent runs afresh.
A kept step keeps its idempotency key: it names the call that made the side effect.
"""

from __future__ import annotations

from uuid import UUID

from agentflow._engine.ports import dispatcher
from agentflow._engine.state import run_actions
from agentflow.exceptions import InvalidInput, InvalidState, RunNotFound
from agentflow.models import Run, Step


def fork(run_id: UUID, *, at: int, by: str | None = None) -> Run:
    """Create, record and enqueue the fork of ``run_id`` at position ``at``."""
    source = Run.objects.filter(id=run_id).first()
    if source is None:
        raise RunNotFound(f"There is no run {run_id}.")
    positions = Step.objects.filter(run_id=run_id, index=None).count()
    if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at <= positions:
        raise InvalidInput(
            f"Cannot fork run {run_id} at {at!r}: 'at' must be a position from 0 to "
            f"{positions} (the run has {positions} recorded positions; at={positions} keeps "
            "them all)."
        )
    unfinished = (
        Step.objects.filter(run_id=run_id, index=None, position__lt=at)
        .exclude(status__in=Step.FINISHED)
        .order_by("position")
        .first()
    )
    if unfinished is not None:
        raise InvalidState(
            f"Cannot fork run {run_id} at {at}: position {unfinished.position} "
            f"({unfinished.kind} '{unfinished.name}') is still {unfinished.status}. Fork at "
            f"{unfinished.position} or earlier, or wait until it finishes."
        )
    forked = run_actions.create_fork(source, at, by)
    dispatcher().advance(forked.id)
    return forked

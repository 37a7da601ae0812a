"""Fork a run at a position: a new run that keeps the steps before it and re-executes the rest.

The kept steps are copied row for row (fan-out children, outputs, errors and sealed
columns included) in one INSERT ... SELECT, so a large fan-out forks in one statement.
Replay of the new run returns them as recorded; from ``at`` on, the agent runs afresh.
A kept step keeps its idempotency key: it names the call that made the side effect.
"""

from __future__ import annotations

from uuid import UUID

from agentflow.engine import sql, store
from agentflow.engine.ports import dispatcher
from agentflow.exceptions import InvalidInput, InvalidState, RunNotFound
from agentflow.models import Budget, Event, Run, Step

STEP = Step._meta.db_table
# Copied as they are; the run id is the fork's, and the columns that schedule an open step
# (its timer, rate slot and last dispatch) start empty (see _copy_steps).
RESET = ("run_id", "wake_at", "rate_slot", "dispatched_at")
KEPT = tuple(column for column in store.STEP_COLUMNS if column not in RESET)


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
    with sql.atomic():
        forked = Run.objects.create(
            agent=source.agent,
            agent_version=source.agent_version,
            input=source.input,
            sealed_input=source.sealed_input,
            owner_id=source.owner_id,
            parent=source,
        )
        own = source.budgets.filter(period=Budget.Period.RUN).first()
        if own is not None:  # the same limits, with nothing spent yet
            own.pk, own.run, own.name = None, forked, f"run {forked.id}"
            own.save()
        _copy_steps(run_id, forked.id, at)
        store.append_event(
            forked.id,
            Event.Type.RUN_CREATED,
            {"agent": forked.agent, "version": forked.agent_version},
        )
        store.append_event(
            forked.id, Event.Type.RUN_FORKED, {"from": str(run_id), "at": at, "by": by}
        )
        store.append_event(
            run_id, Event.Type.RUN_FORKED, {"to": str(forked.id), "at": at, "by": by}
        )
        dispatcher().advance(forked.id)
    return forked


def _copy_steps(source_id: UUID, target_id: UUID, at: int) -> None:
    """Copy the steps before ``at`` (and their children) in one statement."""
    quote = sql.quote
    kept = ", ".join(quote(column) for column in KEPT)
    with sql.connection().cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {STEP} ({quote('run_id')}, {kept}) "
            f"SELECT %s, {kept} FROM {STEP} WHERE run_id = %s AND position < %s",
            [store.db_uuid(target_id), store.db_uuid(source_id), at],
        )

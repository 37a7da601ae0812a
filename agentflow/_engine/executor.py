"""``advance``: take a run's lease, replay its agent from the top, and hand it back.

Called by the transport (a Celery task) with a run id. Safe to call twice at once:
the lease admits one caller; the other asks it to look again before it parks, and
comes back itself when that lease runs out, in case its holder died.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from uuid import UUID

from django.db import close_old_connections

from agentflow import _registry as registry
from agentflow import _tracing as tracing
from agentflow import conf
from agentflow._engine import leases, logs, pausing
from agentflow._engine.context import RunContext
from agentflow._engine.history import histories
from agentflow._engine.interrupts import LeaseLost, Pause, StoreUnavailable, Suspend
from agentflow._engine.ports import dispatcher
from agentflow._engine.serialize import dumps, error_record
from agentflow._engine.state import run_rows, step_rows
from agentflow.exceptions import RedactionUnavailable, UnknownAgent
from agentflow.models import Event, Run, clock

logger = logging.getLogger("agentflow.executor")


def advance(run_id: UUID, *, worker: str) -> str:
    """Advance the run as far as it can go now; return what happened, for logs and tests."""
    with tracing.span("agentflow.advance", {tracing.RUN_ID: str(run_id)}) as span:
        outcome = _advance(run_id, worker, span)
        tracing.annotate(span, {tracing.OUTCOME: outcome})
        return outcome


def _advance(run_id: UUID, worker: str, span: object) -> str:
    try:
        lease = leases.acquire(run_id, worker)
    except RedactionUnavailable as exc:  # its event could not be made safe: nothing written
        return _retry_later(run_id, exc)
    if lease is None:
        return "skipped"
    if isinstance(lease, leases.Busy):
        # The holder may be dead: come back when its lease has run out.
        dispatcher().advance(run_id, eta=lease.retry_at)
        return "deferred"
    tracing.annotate(span, {tracing.AGENT: lease.run.agent})
    with leases.heartbeat.holding(lease):
        try:
            return _drive(lease)
        except LeaseLost as exc:
            logger.info("stopped advancing run %s: %s", run_id, exc, extra=logs.about(run_id))
            return "lease-lost"
        except (StoreUnavailable, RedactionUnavailable) as exc:
            return _retry_later(run_id, exc)


def _retry_later(run_id: UUID, exc: BaseException) -> str:
    """Fail nothing: come back once this lease, which the database still shows as held,
    has run out (the database is back, or the redaction pattern is fixed, by then)."""
    logger.warning("could not advance run %s: %s", run_id, exc, extra=logs.about(run_id))
    close_old_connections()
    expires = clock.now() + leases.lease_duration()
    dispatcher().advance(run_id, eta=leases.retry_after(expires))
    return "store-unavailable"


def _drive(lease: leases.Lease) -> str:
    run = lease.run
    try:
        definition = registry.get_agent(run.agent, run.agent_version)
    except UnknownAgent as exc:
        retry_at = clock.now() + timedelta(seconds=conf.setting("VERSION_RETRY_SECONDS"))
        logger.warning("run %s waits: %s", run.id, exc, extra=logs.about(run.id))
        leases.release_waiting(lease, reason=str(exc), wake_at=retry_at)
        return "version-missing"
    # A run that starts now has no steps, unless it is a fork (its kept steps are copied).
    fresh = lease.first_start and run.parent_id is None
    history = {} if fresh else histories.load(run.id, lease.fence.token)
    while True:
        ctx = RunContext(run, history, lease=lease)
        try:
            output = definition.fn(ctx, **run.real_input)
            if ctx.diverged is not None:  # user code caught it; the run fails all the same
                raise ctx.diverged
            output_json = dumps(output, what=f"output of run {run.id} (the agent's return value)")
        except Suspend as suspend:
            if leases.release_waiting(lease, reason=suspend.reason, wake_at=suspend.wake_at):
                histories.keep(run.id, lease.fence.token, history)
                if suspend.wake_at != run.wake_at:  # else an earlier advance already sent it
                    _schedule(run.id, suspend)
                return "waiting"
            history = step_rows.load_history(run.id)
            continue  # something we wait on moved while we ran: look again
        except Pause as pause:
            if not pausing.pause_held(lease.fence, pause.hit):
                raise LeaseLost(f"run {run.id} was taken over or cancelled") from None
            return "paused"
        except Exception as exc:
            error = error_record(ctx.diverged or exc, position=ctx.position - 1)
            run_rows.finish(
                lease.fence,
                status=Run.Status.FAILED,
                output_json=None,
                error=error,
                event=(Event.Type.RUN_FAILED, {"type": error["type"], "message": error["message"]}),
            )
            return "failed"
        run_rows.finish(
            lease.fence,
            status=Run.Status.SUCCEEDED,
            output_json=output_json,
            error=None,
            event=(Event.Type.RUN_SUCCEEDED, {}),
        )
        return "succeeded"


def _schedule(run_id: UUID, suspend: Suspend) -> None:
    """Send the fast-path wake-up for a timer; the reconciler covers longer ones."""
    if suspend.wake_at is None:
        return
    ahead = (suspend.wake_at - clock.now()).total_seconds()
    if ahead <= conf.setting("MAX_COUNTDOWN_SECONDS"):
        dispatcher().advance(run_id, eta=suspend.wake_at)

"""The module functions of the public API: start, wait, signal, cancel, replay.

Each writes its facts and events in one transaction and sends wake-ups after commit.
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from agentflow import registry
from agentflow.definitions import AgentDefinition
from agentflow.engine import replay as replay_engine
from agentflow.engine import store
from agentflow.engine.ports import dispatcher
from agentflow.engine.serialize import dumps, loads
from agentflow.exceptions import InvalidInput, InvalidState
from agentflow.models import Run, Signal, Step

RunRef = Run | UUID | str


def _run_id(run: RunRef) -> UUID:
    if isinstance(run, Run):
        return run.id
    try:
        return run if isinstance(run, UUID) else UUID(str(run))
    except ValueError:
        raise InvalidInput(f"{run!r} is not a run id (a UUID).") from None


def get_run(run: RunRef) -> Run:
    """Load a run by row, UUID or string id, with a clear error when it does not exist."""
    run_id = _run_id(run)
    try:
        return Run.objects.get(id=run_id)
    except Run.DoesNotExist:
        raise InvalidInput(f"There is no run {run_id}.") from None


def start(
    agent: AgentDefinition | str,
    input: dict[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
    owner: Any = None,
) -> Run:
    """Create a run of the newest deployed version of ``agent`` and enqueue it.

    With an ``idempotency_key`` already used for this agent, return that run instead.
    """
    definition = registry.get_agent(agent.name if isinstance(agent, AgentDefinition) else agent)
    value = {} if input is None else input
    definition.validate_input(value)
    dumps(value, what=f"input of agent {definition.name}")
    if idempotency_key is not None:
        existing = Run.objects.filter(
            agent=definition.name, idempotency_key=idempotency_key
        ).first()
        if existing is not None:
            return existing
    try:
        with transaction.atomic():
            run = Run.objects.create(
                agent=definition.name,
                agent_version=definition.version,
                input=value,
                idempotency_key=idempotency_key,
                owner=owner,
            )
            store.append_event(
                run.id, "run.created", {"agent": run.agent, "version": run.agent_version}
            )
            dispatcher().advance(run.id)
    except IntegrityError:
        if idempotency_key is None:
            raise
        return Run.objects.get(agent=definition.name, idempotency_key=idempotency_key)
    return run


def wait(run: RunRef, timeout: float = 60) -> Run:
    """Block until the run finishes (or pauses); raise ``TimeoutError`` after ``timeout``."""
    run_id = _run_id(run)
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        current = get_run(run_id)
        if current.is_finished or current.status == Run.Status.PAUSED:
            return current
        if time.monotonic() >= deadline:
            waiting = f" ({current.wait_reason})" if current.wait_reason else ""
            raise TimeoutError(
                f"Run {run_id} is still {current.status}{waiting} after {timeout:g}s. "
                "Is a Celery worker running for this site?"
            )
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.5)


def signal(run: RunRef, name: str, data: Any = None) -> None:
    """Deliver ``data`` to the run's ``ctx.wait_for(name)``, now or whenever it gets there."""
    run_id = _run_id(run)
    data_json = dumps(data, what=f"data of signal {name}")
    with transaction.atomic():
        current = Run.objects.select_for_update().filter(id=run_id).first()
        if current is None:
            raise InvalidInput(f"There is no run {run_id}.")
        if current.status not in (*Run.ACTIVE, Run.Status.PAUSED):
            raise InvalidState(
                f"Run {run_id} is {current.status}; signals can only reach a run that has "
                "not finished."
            )
        Signal.objects.create(run_id=run_id, name=name, data=loads(data_json))
        Run.objects.filter(id=run_id).update(wake_seq=F("wake_seq") + 1, wake_at=timezone.now())
        store.append_event(run_id, "signal.received", {"name": name})
        dispatcher().advance(run_id)


def cancel(run: RunRef, *, by: Any = None) -> Run:
    """Mark the run cancelled; no new step starts, and a worker mid-step stops at its next write."""
    run_id = _run_id(run)
    now = timezone.now()
    with transaction.atomic():
        cancelled = Run.objects.filter(
            id=run_id, status__in=(*Run.ACTIVE, Run.Status.PAUSED)
        ).update(
            status=Run.Status.CANCELLED,
            finished_at=now,
            lease_expires_at=None,
            lease_owner="",
            wait_reason="",
            wake_at=None,
        )
        if not cancelled:
            current = get_run(run_id)
            raise InvalidState(f"Run {run_id} is already {current.status}; nothing to cancel.")
        who = getattr(by, "get_username", lambda: str(by))() if by is not None else None
        Step.objects.filter(
            run_id=run_id,
            status__in=(
                Step.Status.PENDING,
                Step.Status.RUNNING,
                Step.Status.WAITING,
                Step.Status.SCHEDULED,
            ),
        ).update(
            status=Step.Status.FAILED,
            finished_at=now,
            error={"type": "cancelled", "message": f"run cancelled by {who or 'the system'}"},
        )
        store.append_event(run_id, "run.cancelled", {"by": who})
    return get_run(run_id)


def replay(run: RunRef) -> replay_engine.ReplayReport:
    """Re-run the deployed agent code on the run's history, without side effects."""
    return replay_engine.replay(get_run(run))

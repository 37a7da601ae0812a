"""The module functions of the public API: start, wait, signal, cancel, replay, approve,
reject, resume, fork, compare.

Each writes its facts and events in one transaction and sends wake-ups after commit.
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from agentflow import _registry as registry
from agentflow import _tracing as tracing
from agentflow import permissions
from agentflow._definitions import AgentDefinition
from agentflow._engine import compare as compare_engine
from agentflow._engine import decisions, pausing, retry
from agentflow._engine import fork as fork_engine
from agentflow._engine import replay as replay_engine
from agentflow._engine.ports import dispatcher
from agentflow._engine.serialize import check_text, dumps, loads
from agentflow._engine.state import run_actions, run_rows
from agentflow._guardrails import budgets
from agentflow._guardrails.redaction import redact_text
from agentflow._guardrails.sealing import protect
from agentflow.exceptions import ApprovalNotFound, InvalidState, RunNotFound
from agentflow.models import Approval, Run, Signal, clock

RunRef = Run | UUID | str


def _run_id(run: RunRef) -> UUID:
    if isinstance(run, Run):
        return run.id
    try:
        return run if isinstance(run, UUID) else UUID(str(run))
    except ValueError:
        raise RunNotFound(f"{run!r} is not a run id (a UUID).") from None


def get_run(run: RunRef) -> Run:
    """Load a run by row, UUID or string id; ``RunNotFound`` when there is none."""
    run_id = _run_id(run)
    try:
        return Run.objects.get(id=run_id)
    except Run.DoesNotExist:
        raise RunNotFound(f"There is no run {run_id}.") from None


def start(
    agent: AgentDefinition | str,
    input: dict[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
    owner: Any = None,
    budget: dict[str, Any] | None = None,
) -> Run:
    """Create a run of the newest deployed version of ``agent`` and enqueue it.

    With an ``idempotency_key`` already used for this agent, return that run instead.
    ``budget`` gives the run its own limits, e.g. ``{"max_cost": "1.00", "max_steps": 500}``
    (any of the Budget model's ``max_*`` fields).
    """
    definition = registry.get_agent(agent.name if isinstance(agent, AgentDefinition) else agent)
    return create_run(
        definition, input, idempotency_key=idempotency_key, owner=owner, budget=budget
    )


def create_run(
    definition: AgentDefinition,
    input: dict[str, Any] | None,
    *,
    idempotency_key: str | None,
    owner: Any,
    budget: dict[str, Any] | None,
    schedule_id: int | None = None,
) -> Run:
    """``start`` for a resolved agent; a beat tick also links the run to its schedule."""
    value = {} if input is None else input
    # Stored form first: validating a value nested 100,000 deep would itself recurse.
    stored_input, sealed_input = protect(dumps(value, what=f"input of agent {definition.name}"))
    definition.validate_input(value)
    if idempotency_key is not None:
        check_text(
            idempotency_key,
            what=f"idempotency_key of agent {definition.name}",
            max_chars=Run._meta.get_field("idempotency_key").max_length,
        )
    run_budget = budgets.run_budget(definition.name, budget)
    if idempotency_key is not None:
        existing = Run.objects.filter(
            agent=definition.name, idempotency_key=idempotency_key
        ).first()
        if existing is not None:
            return existing
    run = Run(
        agent=definition.name,
        agent_version=definition.version,
        input=loads(stored_input),
        sealed_input=sealed_input,
        idempotency_key=idempotency_key,
        owner=owner,
        schedule_id=schedule_id,
        has_own_budget=run_budget is not None,
    )
    attributes = {tracing.RUN_ID: str(run.id), tracing.AGENT: definition.name}
    with tracing.span("agentflow.start", attributes):
        if not run_rows.create(run, own_budget=run_budget):
            return Run.objects.get(agent=definition.name, idempotency_key=idempotency_key)
        dispatcher().advance(run.id)  # the message continues this span's trace
    return run


def wait(run: RunRef, timeout: float = 60) -> Run:
    """Block until the run finishes, pauses, or waits for a person (a pending approval).

    Raises ``TimeoutError`` after ``timeout`` seconds.
    """
    run_id = _run_id(run)
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        current = get_run(run_id)
        if current.is_finished or current.status == Run.Status.PAUSED:
            return current
        if (
            current.status == Run.Status.WAITING
            and current.approvals.filter(status=Approval.Status.PENDING).exists()
        ):
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
    check_text(name, what="signal name", max_chars=Signal._meta.get_field("name").max_length)
    data_json = dumps(data, what=f"data of signal {name}")
    run_actions.receive_signal(run_id, name, data_json)
    dispatcher().advance(run_id)


def cancel(run: RunRef, *, by: Any = None) -> Run:
    """Mark the run cancelled; no new step starts, and a worker mid-step stops at its next write."""
    run_id = _run_id(run)
    who = _who(by)
    if not run_actions.cancel(run_id, who, clock.now()):
        current = get_run(run_id)
        raise InvalidState(f"Run {run_id} is already {current.status}; nothing to cancel.")
    return get_run(run_id)


def _who(by: Any) -> str | None:
    """The user (or caller) named in a run's records, redacted like everything stored."""
    if by is None:
        return None
    return redact_text(getattr(by, "get_username", lambda: str(by))())


def replay(run: RunRef) -> replay_engine.ReplayReport:
    """Re-run the deployed agent code on the run's history, without side effects."""
    return replay_engine.replay(get_run(run))


ApprovalRef = Approval | int | str


def _approval(approval: ApprovalRef) -> Approval:
    approval_id = approval.pk if isinstance(approval, Approval) else approval
    try:
        return Approval.objects.get(id=int(approval_id))
    except (Approval.DoesNotExist, ValueError, TypeError):
        raise ApprovalNotFound(f"There is no approval {approval_id!r}.") from None


def approve(approval: ApprovalRef, *, by: Any, data: Any = None, comment: str = "") -> Approval:
    """Approve once, optionally with edited ``data``; the run goes on.

    Raises ``ApprovalNotFound`` if there is no such approval, ``PermissionDenied``
    (nothing changes) if ``by`` may not decide, ``InvalidInput`` if ``data`` fails the
    schema (naming the path), and ``AlreadyDecided`` if a decision was already recorded.
    """
    row = _approval(approval)
    permissions.check_decide(by, row)
    return decisions.decide(
        row.id, outcome=Approval.Status.APPROVED, by=by, data=data, comment=comment
    )


def reject(approval: ApprovalRef, *, by: Any, comment: str = "") -> Approval:
    """Reject once; the agent gets a Decision with ``approved=False`` (a tool call is refused)."""
    row = _approval(approval)
    permissions.check_decide(by, row)
    return decisions.decide(row.id, outcome=Approval.Status.REJECTED, by=by, comment=comment)


def resume(run: RunRef, *, by: Any = None) -> Run:
    """Continue a PAUSED run, or retry a FAILED run from its failed step.

    A paused run goes on after an operator raised the budget or policy limit that paused
    it. A failed run re-executes its failed step (a fan-out: its failed children) and
    whatever follows, after the operator fixed the cause; the steps before it are kept,
    so no side effect that already happened runs again. ``InvalidState`` for any other run.
    """
    run_id = _run_id(run)
    current = get_run(run_id)
    if current.status == Run.Status.FAILED:
        retry.retry(run_id, by=_who(by))
    elif current.status == Run.Status.PAUSED:
        pausing.resume(run_id, by=_who(by))
    else:
        raise InvalidState(
            f"Run {run_id} is {current.status}; only a paused run can be resumed and only a "
            "failed run retried. Use agentflow.fork(run, at=...) to run it again from a step."
        )
    return get_run(run_id)


def fork(run: RunRef, *, at: int, by: Any = None) -> Run:
    """Start a new run of the same agent, version and input that keeps the steps before
    position ``at`` and re-executes from there; its ``parent`` is ``run``."""
    return fork_engine.fork(_run_id(run), at=at, by=_who(by))


def compare(a: RunRef, b: RunRef) -> compare_engine.RunComparison:
    """Compare two runs position by position (a fork and its parent, say)."""
    return compare_engine.compare(get_run(a), get_run(b))

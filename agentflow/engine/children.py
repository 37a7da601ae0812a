"""Run one fan-out child: pass its gates, claim it, call the tool, record, maybe join.

Safe to receive any number of times: a child is claimed by a status transition that
bumps its attempt counter, so a duplicate delivery of a claimed or finished child does
nothing, and a claim whose worker died is found by its heartbeat and handed out again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from agentflow import conf, registry
from agentflow.engine import fanout, leases, pausing
from agentflow.engine.errors import tool_error
from agentflow.engine.ports import dispatcher
from agentflow.engine.serialize import dumps, error_record, loads
from agentflow.engine.store import db_when
from agentflow.engine.timeouts import call_with_timeout
from agentflow.exceptions import BudgetExceeded, PayloadError, ToolArgumentError, UnknownTool
from agentflow.gates import admission, budgets
from agentflow.gates.limits import limits_for
from agentflow.gates.redaction import redact, redact_json
from agentflow.gates.sealing import protect, reveal
from agentflow.models import Budget, Run, Step

logger = logging.getLogger("agentflow.children")
STEP = Step._meta.db_table
RUN = Run._meta.db_table
BUDGET = Budget._meta.db_table
QUOTED_INDEX = connection.ops.quote_name("index")
# A child waiting for its approval is open too: the fan-out is not complete without it.
OPEN = (Step.Status.PENDING, Step.Status.SCHEDULED, Step.Status.RUNNING, Step.Status.WAITING)
CLAIMABLE = (Step.Status.PENDING, Step.Status.SCHEDULED)
# Dead claims and lost wake-ups each handled by one recovery pass, at most.
BATCH = 5000


class Claim:
    """A running child, renewed by the heartbeat thread (``heartbeat_at``)."""

    def __init__(self, step_id: int, attempt: int) -> None:
        self.step_id, self.attempt = step_id, attempt
        self.lost = threading.Event()

    def renew(self) -> bool:
        return bool(
            Step.objects.filter(
                id=self.step_id, status=Step.Status.RUNNING, attempts=self.attempt
            ).update(heartbeat_at=timezone.now())
        )

    def __repr__(self) -> str:
        return f"<Claim step {self.step_id} attempt {self.attempt}>"


def wake(waiters: list[str]) -> None:
    """Dispatch the calls a freed concurrency slot admits next."""
    send = dispatcher()
    for waiter in waiters:
        kind, _, ident = waiter.partition(":")
        if kind == "step":
            send.run_child(int(ident))
        elif kind == "run":
            send.advance(ident)


def _defer(step: Step) -> str:
    """A wake-up came before the child is due: ask for it again at its time."""
    Step.objects.filter(id=step.id, status__in=CLAIMABLE).update(dispatched_at=timezone.now())
    dispatcher().run_child(step.id, eta=step.wake_at)
    return "deferred"


@dataclass(frozen=True)
class Claimed:
    """A child just claimed, with what running it needs (read in the claim itself)."""

    id: int
    run_id: Any
    position: int
    index: int
    name: str
    args: Any
    idempotency_key: str
    attempt: int
    rate_slot: datetime | None
    agent: str
    owner_id: int | None
    has_own_budget: bool


def _claim(step_id: int) -> Claimed | None:
    """open -> running, with attempts + 1, if due and its run is active; one statement.

    The first claim sets ``started_at``: a child starts when a worker takes it, not when
    its fan-out was recorded.
    """
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {STEP} SET status = 'running', attempts = attempts + 1, heartbeat_at = %s, "
            "started_at = COALESCE(started_at, %s), wake_at = NULL "
            "WHERE id = %s AND status IN ('pending', 'scheduled') "
            "AND (wake_at IS NULL OR wake_at <= %s) "
            f"AND EXISTS (SELECT 1 FROM {RUN} r WHERE r.id = run_id AND r.status IN "
            "('pending', 'running', 'waiting')) "
            f"RETURNING id, run_id, position, {QUOTED_INDEX}, name, args, idempotency_key, "
            f"attempts, rate_slot, (SELECT agent FROM {RUN} r WHERE r.id = run_id), "
            f"(SELECT owner_id FROM {RUN} r WHERE r.id = run_id), "
            f"EXISTS (SELECT 1 FROM {BUDGET} b WHERE b.run_id = {STEP}.run_id AND b.enabled), "
            "sealed_args",
            [
                db_when(now),
                db_when(now),
                step_id,
                db_when(now + timedelta(seconds=admission.NOW_ENOUGH)),
            ],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    sealed_args = values.pop()
    values[5] = reveal(loads(values[5]), sealed_args)  # the tool gets the real arguments
    values[8] = _from_db_datetime(values[8])
    values[11] = bool(values[11])  # SQLite answers EXISTS with 0 or 1
    return Claimed(*values)


def _from_db_datetime(value: Any) -> datetime | None:
    """Raw cursors give SQLite datetimes back naive (or as text): they are UTC."""
    if value is None:
        return None
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _finish(step: Claimed, status: str, output_json: str | None, error: Any) -> bool:
    """Record the outcome (if the claim still holds); True if no sibling is left open."""
    with connection.cursor() as cursor:
        stored_output, sealed_output = protect(output_json)
        cursor.execute(
            f"UPDATE {STEP} SET status = %s, output = %s, sealed_output = %s, error = %s, "
            "finished_at = %s, heartbeat_at = NULL, rate_slot = NULL "
            "WHERE id = %s AND status = 'running' AND attempts = %s",
            [
                status,
                stored_output,
                sealed_output,
                None
                if error is None
                else redact_json(dumps(error, what="child error", limited=False)),
                db_when(timezone.now()),
                step.id,
                step.attempt,
            ],
        )
        if cursor.rowcount != 1:
            return False  # the claim lapsed and another attempt owns the child now
    return not fanout.any_open(step.run_id, step.position)


def _schedule_retry(step: Claimed, delay: float, error: dict[str, Any]) -> None:
    eta = timezone.now() + timedelta(seconds=delay)
    Step.objects.filter(id=step.id, status=Step.Status.RUNNING, attempts=step.attempt).update(
        status=Step.Status.SCHEDULED,
        wake_at=eta,
        error=redact(error),
        heartbeat_at=None,
        rate_slot=None,
        dispatched_at=timezone.now(),
    )
    dispatcher().run_child(step.id, eta=eta)


def run_child(step_id: int) -> str:
    """Execute one child if it is due and free; return what happened, for logs and tests."""
    step = _claim(step_id)
    if step is None:
        return _not_claimed(step_id)
    try:
        tool = registry.get_tool(step.name)
    except UnknownTool as exc:
        return _close(step, Step.Status.FAILED, None, error_record(exc))
    try:
        kwargs = tool.validate(step.args)
    except ValueError as exc:
        return _close(step, Step.Status.FAILED, None, _argument_error(step, tool, exc))
    # Policy and approval were settled when the fan-out was created; the budget and the
    # limit gates come last, right before the call, so admission time is start time.
    usage = budgets.Usage(cost=tool.cost, tool_calls=1)
    what = f"tool {tool.name} at run {step.run_id} position {step.position} child {step.index}"
    rows = budgets.for_run(step.run_id, step.agent, step.owner_id, own=step.has_own_budget)
    try:
        reservation = budgets.reserve(rows, step.run_id, usage, what)
    except BudgetExceeded:
        reservation = _reserve_or_hold(step, rows, usage, what)
        if reservation is None:
            return "paused"
    try:
        limits = limits_for(tool, step.agent, step.owner_id)
        gate = admission.Admission()
        if limits.any and step.attempt <= tool.retries + 1:
            gate = admission.admit(
                limits,
                member=f"step:{step.id}:{step.attempt}",
                booked=step.rate_slot,
                waiter=f"step:{step.id}",
            )
            if gate.delay:
                return _unclaim(step, gate)
        try:
            return _execute(step, tool, kwargs, limits, gate, reservation)
        finally:
            wake(admission.release(limits, gate.slot))
    finally:
        if not reservation.used:  # the tool never ran: give the reservation back
            budgets.release(reservation)


def _argument_error(step: Claimed, tool: Any, exc: ValueError) -> dict[str, Any]:
    """The record of a child whose recorded arguments its tool's schema now refuses.

    They were valid when the fan-out was recorded, so the tool changed since (a deploy in
    the middle of the fan-out). Retrying cannot help: the child fails once, unrun.
    """
    error = ToolArgumentError(
        f"Tool '{tool.name}' got invalid arguments at run {step.run_id} position "
        f"{step.position} child {step.index}: {exc}. The tool did not run. Its schema no "
        "longer accepts the arguments recorded when the fan-out began (was the tool changed "
        "since?); fix the tool or the agent and retry the run.",
        tool=tool.name,
        error_type="ToolArgumentError",
    )
    return error_record(error, tool=tool.name)


def _reserve_or_hold(
    step: Claimed, rows: list[Any], usage: budgets.Usage, what: str
) -> budgets.Reservation | None:
    """The budget refused: decide again under the run's row lock, which ``resume`` takes too.

    A refusal read before an operator raised the limit and resumed the run must not pause
    it again, and a child handed back while the run is paused must be there for ``resume``
    to send. So: if the run is still active and the budget still has no room, hand the
    claim back and pause the run; if it is paused already, only hand the claim back.
    """
    with transaction.atomic():
        active = (
            Run.objects.select_for_update().filter(id=step.run_id, status__in=Run.ACTIVE).exists()
        )
        if active:
            try:  # limits are read fresh: a raised one admits the call now
                return budgets.reserve(rows, step.run_id, usage, what)
            except BudgetExceeded as exc:
                pausing.pause(step.run_id, str(exc))
        Step.objects.filter(id=step.id, status=Step.Status.RUNNING, attempts=step.attempt).update(
            status=Step.Status.PENDING, attempts=step.attempt - 1, heartbeat_at=None
        )
    return None


def _not_claimed(step_id: int) -> str:
    """Not claimable: finished, claimed elsewhere, its run inactive, or not due yet."""
    early = Step.objects.filter(
        id=step_id, status__in=CLAIMABLE, wake_at__gt=timezone.now(), run__status__in=Run.ACTIVE
    ).first()
    if early is None:
        return "skipped"
    return _defer(early)


def _unclaim(step: Claimed, gate: admission.Admission) -> str:
    """Hand the claim back (the attempt does not count) and come back when admitted."""
    eta = gate.wake_at
    Step.objects.filter(id=step.id, status=Step.Status.RUNNING, attempts=step.attempt).update(
        status=Step.Status.SCHEDULED,
        attempts=step.attempt - 1,
        heartbeat_at=None,
        wake_at=eta,
        rate_slot=gate.booked,
        dispatched_at=timezone.now(),
    )
    dispatcher().run_child(step.id, eta=eta)
    return "deferred"


def _execute(
    step: Claimed,
    tool: Any,
    kwargs: dict[str, Any],
    limits: Any,
    gate: admission.Admission,
    reservation: budgets.Reservation,
) -> str:
    where = f"run {step.run_id} position {step.position} child {step.index}"
    attempt = step.attempt
    if attempt > tool.retries + 1:
        crash = RuntimeError(f"the worker died during each of the {attempt - 1} attempts")
        error = tool_error(tool.name, where, attempt - 1, crash)
        record = error_record(crash, message=str(error), tool=tool.name, attempts=attempt - 1)
        return _close(step, Step.Status.FAILED, None, record)
    if tool.takes_idempotency_key:
        kwargs["idempotency_key"] = step.idempotency_key
    claim = Claim(step.id, attempt)
    if tool.takes_stop_requested:  # the heartbeat sets it when the claim is gone
        kwargs["stop_requested"] = claim.lost
    claims: list[leases.Renewable] = [claim]
    if gate.slot:
        claims.append(admission.SlotLease(limits, gate.slot))
    try:
        with contextlib.ExitStack() as held:
            for claim in claims:
                held.enter_context(leases.heartbeat.holding(claim))
            reservation.used = True
            result = call_with_timeout(tool.fn, kwargs, tool.timeout, f"tool {tool.name}")
        output_json = dumps(result, what=f"output of tool {tool.name} at {where}")
    except Exception as exc:
        retryable = not isinstance(exc, (*tool.non_retryable, PayloadError))
        if retryable and attempt <= tool.retries:
            delay = min(tool.retry_backoff * 2 ** (attempt - 1), tool.retry_backoff_max)
            _schedule_retry(step, delay, error_record(exc))
            return "retrying"
        error = tool_error(tool.name, where, attempt, exc)
        record = error_record(exc, message=str(error), tool=tool.name, attempts=attempt)
        return _close(step, Step.Status.FAILED, None, record)
    return _close(step, Step.Status.SUCCEEDED, output_json, None)


def _close(step: Claimed, status: str, output_json: str | None, error: Any) -> str:
    if _finish(step, status, output_json, error):
        fanout.join(step.run_id, step.position)
    return status


def recover(now: datetime) -> dict[str, int]:
    """Re-send children whose claim died (stale heartbeat) or whose wake-up was lost.

    Each pass handles at most ``BATCH`` of each; the next pass takes the rest.
    """
    dead = _reset_dead(now)
    grace = timedelta(seconds=conf.setting("REDISPATCH_SECONDS"))
    lost = list(
        Step.objects.filter(
            Q(wake_at__isnull=True) | Q(wake_at__lt=now - grace),
            index__isnull=False,
            status__in=CLAIMABLE,
            dispatched_at__lt=now - grace,
            run__status__in=Run.ACTIVE,
        ).values_list("id", flat=True)[:BATCH]
    )
    Step.objects.filter(id__in=lost).update(dispatched_at=now)
    send = dispatcher()
    for step_id in dead:  # their runs were cut off mid-step: they go ahead of queued tools
        send.run_child(step_id, urgent=True)
    for step_id in lost:
        send.run_child(step_id)
    return {"children_dead": len(dead), "children_resent": len(lost)}


def _reset_dead(now: datetime) -> list[int]:
    """Hand back claims whose heartbeat stopped; return the ids this call reset.

    They are marked dispatched now, since the caller sends them at once: the lost-wake-up
    query must not find (and send, and count) them a second time.
    """
    lease = timedelta(seconds=conf.setting("LEASE_SECONDS"))
    stale = Step.objects.filter(
        index__isnull=False, status=Step.Status.RUNNING, heartbeat_at__lt=now - lease
    ).values_list("id", "attempts")[:BATCH]
    return [
        step_id
        for step_id, attempts in stale
        if Step.objects.filter(id=step_id, status=Step.Status.RUNNING, attempts=attempts).update(
            status=Step.Status.SCHEDULED, wake_at=None, heartbeat_at=None, dispatched_at=now
        )
    ]

"""Run one fan-out child: claim it, pass its gates, run one attempt, record, maybe join.

Safe to receive any number of times: a child is claimed by a status transition that
bumps its attempt counter, so a duplicate delivery of a claimed or finished child does
nothing, and a claim whose worker died is found by its heartbeat and handed out again.
The attempt itself is ``attempts.Attempt``, the same pipeline as ``ctx.call``'s.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Q

from agentflow import _registry as registry
from agentflow import conf
from agentflow._engine import fan_out_record, pausing
from agentflow._engine.attempts import Attempt, queue_of
from agentflow._engine.call_ids import CallKey, Waiter
from agentflow._engine.interrupts import LeaseLost, unavailable_as_interrupt
from agentflow._engine.ports import dispatcher
from agentflow._engine.serialize import error_record, loads
from agentflow._engine.state import child_rows, run_rows
from agentflow._guardrails import admission, budgets
from agentflow._guardrails.redaction import redact
from agentflow._guardrails.sealing import reveal
from agentflow.exceptions import BudgetExceeded, ToolArgumentError, UnknownTool
from agentflow.models import Run, Step, clock

logger = logging.getLogger("agentflow.children")
# Dead claims and lost wake-ups each handled by one recovery pass, at most.
BATCH = 5000


class Claim:
    """A running child, renewed by the heartbeat thread (``heartbeat_at``)."""

    def __init__(self, step_id: int, attempt: int) -> None:
        self.step_id, self.attempt = step_id, attempt
        self.lost = threading.Event()

    def renew(self) -> bool:
        return child_rows.renew_claim(self.step_id, self.attempt)

    def __repr__(self) -> str:
        return f"<Claim step {self.step_id} attempt {self.attempt}>"


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

    @property
    def where(self) -> str:
        return f"run {self.run_id} position {self.position} child {self.index}"

    @property
    def queue(self) -> str | None:
        return queue_of(self.name)


def _claim(step_id: int) -> Claimed | None:
    now = clock.now()
    row = child_rows.claim_child(step_id, now, now + timedelta(seconds=admission.NOW_ENOUGH))
    if row is None:
        return None
    return Claimed(
        id=row["id"],
        run_id=row["run_id"],
        position=row["position"],
        index=row["child_index"],
        name=row["name"],
        args=reveal(loads(row["args"]), row["sealed_args"]),  # the tool gets the real arguments
        idempotency_key=row["idempotency_key"],
        attempt=row["attempts"],
        rate_slot=_from_db_datetime(row["rate_slot"]),
        agent=row["agent"],
        owner_id=row["owner_id"],
        has_own_budget=bool(row["has_own_budget"]),  # SQLite answers with 0 or 1
    )


def _from_db_datetime(value: Any) -> datetime | None:
    """Raw cursors give SQLite datetimes back naive (or as text): they are UTC."""
    if value is None:
        return None
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def run_child(step_id: int) -> str:
    """Execute one child if it is due and free; return what happened, for logs and tests."""
    step = _claim(step_id)
    if step is None:
        return _not_claimed(step_id)
    try:
        tool = registry.get_tool(step.name)
    except UnknownTool as exc:
        return ChildOutcome(step).close(Step.Status.FAILED, None, error_record(exc))
    try:
        kwargs = tool.validate(step.args)
    except ValueError as exc:
        return ChildOutcome(step).close(Step.Status.FAILED, None, _argument_error(step, tool, exc))
    # Policy and approval were settled when the fan-out was created; the budget and the
    # limit gates come last, right before the call, so admission time is start time.
    claim = Claim(step.id, step.attempt)
    attempt = Attempt(
        tool,
        kwargs,
        attempt=step.attempt,
        where=step.where,
        key=CallKey.parse(step.idempotency_key),
        agent=step.agent,
        owner_id=step.owner_id,
        outcome=ChildOutcome(step, atomic=tool.atomic),
        stop=claim.lost,  # the heartbeat sets it when the claim is gone
    )
    attempt.held.append(claim)
    with attempt.budgeted():
        with unavailable_as_interrupt("reading budgets"):
            rows = budgets.for_run(step.run_id, step.agent, step.owner_id, own=step.has_own_budget)
        try:
            attempt.reserve(rows, step.run_id)
        except BudgetExceeded:
            held = _reserve_or_hold(step, rows, attempt.usage, f"tool {tool.name} at {step.where}")
            if held is None:
                return "paused"
            attempt.reservation = held
        try:
            return attempt.run(
                booked=step.rate_slot,
                member=f"step:{step.id}:{step.attempt}",
                waiter=str(Waiter.child(step.id, step.name)),
            )
        except LeaseLost:
            return "lost"  # the claim lapsed; another attempt owns the child now


def run_in_turn(step_ids: list[int], seconds: float) -> tuple[list[str], list[int]]:
    """Run children one after another for about ``seconds``; (their outcomes, ids left).

    The rest is sent on by the caller, outside the chord, whose body may then fire early:
    harmless, since the last child to finish joins (``ChildOutcome``).
    """
    deadline = time.monotonic() + seconds
    outcomes: list[str] = []
    for done, step_id in enumerate(step_ids):
        if outcomes and time.monotonic() > deadline:
            return outcomes, step_ids[done:]
        outcomes.append(run_child(step_id))
    return outcomes, []


class ChildOutcome:
    """How a child's attempt is stored: on its own row, claimed by its attempt number."""

    def __init__(self, step: Claimed, *, atomic: bool = False) -> None:
        self.step, self.atomic = step, atomic
        # Set by succeeded(): whether a sibling was still open, and whether to look again.
        self.open_left = self.look_again = True

    def throttled(self, attempt: int, gate: admission.Admission) -> str:
        """Hand the claim back (the attempt does not count) and come back when admitted."""
        step, eta = self.step, gate.wake_at
        child_rows.defer(step.id, attempt, eta, attempts=attempt - 1, rate_slot=gate.booked)
        dispatcher().run_child(step.id, eta=eta, queue=step.queue)
        return "deferred"

    def retrying(self, attempt: int, exc: Exception, wake_at: datetime) -> str:
        step = self.step
        child_rows.defer(step.id, attempt, wake_at, error=redact(error_record(exc)), rate_slot=None)
        dispatcher().run_child(step.id, eta=wake_at, queue=step.queue)
        return "retrying"

    def succeeded(self, attempt: int, output_json: str) -> str:
        recorded, self.open_left, racing = child_rows.finish_child(
            self.step.id, attempt, Step.Status.SUCCEEDED, output_json, None
        )
        if not recorded:
            # The claim lapsed: an atomic tool's writes roll back with this.
            raise LeaseLost(f"the claim of {self.step.where} lapsed")
        # An atomic tool's probe ran inside its transaction, before the commit.
        self.look_again = racing or self.atomic
        return Step.Status.SUCCEEDED

    def committed(self, status: str) -> str:
        self._join_unless_open(self.open_left, self.look_again)
        return status

    def failed(self, attempts: int, exc: BaseException, error: Exception) -> str:
        record = error_record(exc, message=str(error), tool=self.step.name, attempts=attempts)
        return self.close(Step.Status.FAILED, None, record)

    def close(self, status: str, output_json: str | None, error: Any) -> str:
        """Record the outcome; the last child to finish joins the fan-out."""
        recorded, open_left, racing = child_rows.finish_child(
            self.step.id, self.step.attempt, status, output_json, error
        )
        if recorded:
            self._join_unless_open(open_left, racing)
        return status

    def _join_unless_open(self, open_left: bool, look_again: bool) -> None:
        """Join the fan-out if no sibling is open, once this child's outcome is committed.

        ``look_again``: the probe saw open siblings that were all running, and one of them
        may have been finishing at the same moment, seeing this child open too; so look
        again, now that this outcome is committed. Nobody is left to join otherwise.
        """
        step = self.step
        if open_left and look_again:
            open_left = fan_out_record.any_open(step.run_id, step.position)
        if not open_left:
            fan_out_record.join(step.run_id, step.position)


def _argument_error(step: Claimed, tool: Any, exc: ValueError) -> dict[str, Any]:
    """The record of a child whose recorded arguments its tool's schema now refuses.

    They were valid when the fan-out was recorded, so the tool changed since (a deploy in
    the middle of the fan-out). Retrying cannot help: the child fails once, unrun.
    """
    error = ToolArgumentError(
        f"Tool '{tool.name}' got invalid arguments at {step.where}: {exc}. The tool did not "
        "run. Its schema no longer accepts the arguments recorded when the fan-out began "
        "(was the tool changed since?); fix the tool or the agent and retry the run.",
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

    def reserve() -> budgets.Reservation | None:
        try:  # limits are read fresh: a raised one admits the call now
            with unavailable_as_interrupt("reserving budget"):
                return budgets.reserve(rows, step.run_id, usage, what)
        except BudgetExceeded as exc:
            pausing.pause(step.run_id, exc.hit)
            return None

    return run_rows.admit_child(step.run_id, step.id, step.attempt, reserve)


def _not_claimed(step_id: int) -> str:
    """Not claimable: finished, claimed elsewhere, its run inactive, or not due yet."""
    early = Step.objects.filter(
        id=step_id, status__in=Step.CLAIMABLE, wake_at__gt=clock.now(), run__status__in=Run.ACTIVE
    ).first()
    if early is None:
        return "skipped"
    # A wake-up came before the child is due: ask for it again at its time.
    child_rows.mark_dispatched([early.id], clock.now())
    dispatcher().run_child(early.id, eta=early.wake_at, queue=queue_of(early.name))
    return "deferred"


def recover(now: datetime) -> dict[str, int]:
    """Re-send children whose claim died (stale heartbeat) or whose wake-up was lost.

    Each pass handles at most ``BATCH`` of each; the next pass takes the rest.
    """
    dead = child_rows.reset_dead(now, timedelta(seconds=conf.setting("LEASE_SECONDS")), BATCH)
    grace = timedelta(seconds=conf.setting("REDISPATCH_SECONDS"))
    lost = list(
        Step.objects.filter(
            Q(wake_at__isnull=True) | Q(wake_at__lt=now - grace),
            index__isnull=False,
            status__in=Step.CLAIMABLE,
            dispatched_at__lt=now - grace,
            run__status__in=Run.ACTIVE,
        ).values_list("id", "name")[:BATCH]
    )
    child_rows.mark_dispatched([step_id for step_id, _ in lost], now)
    send = dispatcher()
    for step_id, name in dead:  # their runs were cut off mid-step: they go ahead of queued tools
        send.run_child(step_id, urgent=True, queue=queue_of(name))
    for step_id, name in lost:
        send.run_child(step_id, queue=queue_of(name))
    return {"children_dead": len(dead), "children_resent": len(lost)}

"""One tool call at a position: policy, approval, budget, limits, then the call and its record.

``RunContext.call`` hands a new (or unfinished) position here; the fan-out children of
``ctx.map`` pass the same gates in ``engine.children``.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from agentflow.definitions import ToolDefinition
from agentflow.engine import approvals, children, leases, store
from agentflow.engine.errors import tool_error
from agentflow.engine.interrupts import Pause, Suspend
from agentflow.engine.serialize import dumps, error_record
from agentflow.engine.timeouts import call_with_timeout
from agentflow.exceptions import BudgetExceeded, PayloadError, PolicyDenied, ToolArgumentError
from agentflow.gates import admission, budgets, policy
from agentflow.gates.limits import limits_for
from agentflow.models import Step

if TYPE_CHECKING:
    from agentflow.engine.context import RunContext


class ToolCall:
    """One attempt of a tool call at a new (or unfinished) position."""

    def __init__(
        self,
        ctx: RunContext,
        definition: ToolDefinition,
        args: dict[str, Any],
        args_json: str,
        digest: str,
        position: int,
        record: store.StepRecord | None,
    ) -> None:
        self.ctx, self.tool, self.args = ctx, definition, args
        self.args_json, self.digest, self.position, self.record = (
            args_json,
            digest,
            position,
            record,
        )
        self.where = f"run {ctx.run.id} position {position}"
        self.reservation = budgets.Reservation()  # what the call holds against budgets

    def _event(self, type_: str, **extra: Any) -> tuple[str, dict[str, Any]]:
        return self.ctx._event(type_, self.position, "call", self.tool.name, **extra)

    def run(self) -> Any:
        run = self.ctx.run
        # Guardrails in order: policy, approval, budget, then rate limit and concurrency.
        verdict = policy.check_tool(self.tool, run.agent, run.owner_id, self.args, self.where)
        if verdict.denied:
            denied = PolicyDenied(verdict.denied)
            self._finish_new(Step.Status.FAILED, error=error_record(denied))
            raise denied
        args = self.args
        if verdict.approval:
            args = approvals.tool_gate(self, verdict.approval)
        try:
            kwargs = self.tool.validate(args)
        except ValueError as exc:
            error = ToolArgumentError(
                f"Tool '{self.tool.name}' got invalid arguments at {self.where}: {exc}. "
                "The tool did not run; fix the arguments in the agent code.",
                tool=self.tool.name,
                error_type="ToolArgumentError",
            )
            self._finish_new(Step.Status.FAILED, error=error_record(error))
            raise error from None
        record, now = self.record, timezone.now()
        if record is not None and record.status == Step.Status.SCHEDULED and record.wake_at > now:
            raise Suspend(
                f"tool {self.tool.name} waits until {record.wake_at.isoformat()}", record.wake_at
            )
        try:
            reservation = self.ctx.reserve(
                budgets.Usage(cost=self.tool.cost, tool_calls=1),
                f"tool {self.tool.name} at {self.where}",
            )
        except BudgetExceeded as exc:
            if record is None:  # nothing recorded here: resuming takes this position anew
                self.ctx.uncount_step()
            raise Pause(str(exc)) from None
        self.reservation = reservation
        try:
            return self._admitted(kwargs, now)
        finally:
            if not reservation.used:  # the tool never ran: give the reservation back
                budgets.release(reservation)

    def _admitted(self, kwargs: dict[str, Any], now: datetime) -> Any:
        record = self.record
        attempt = (record.attempts if record else 0) + 1
        step_id = self._claim(attempt, now)
        if attempt > self.tool.retries + 1:
            # Every earlier attempt was cut off without an outcome: its worker died.
            crash = RuntimeError(f"the worker died during each of the {attempt - 1} attempts")
            return self._fail(step_id, attempt - 1, crash)
        # The limit gates come last, right before the call, so admission time is start time.
        run = self.ctx.run
        limits = limits_for(self.tool, run.agent, run.owner_id)
        gate = admission.Admission()
        if limits.any:
            gate = admission.admit(
                limits,
                member=f"{self.ctx._key(self.position)}:{attempt}",
                booked=record.rate_slot if record is not None else None,
                waiter=f"run:{run.id}",
            )
            if gate.delay:
                self._throttle(step_id, attempt, gate)
        try:
            return self._call(step_id, kwargs, attempt, limits, gate)
        finally:
            children.wake(admission.release(limits, gate.slot))

    def _claim(self, attempt: int, now: datetime) -> int:
        """Record the attempt as running before the tool runs; return the step id."""
        started = self._event("step.started", attempt=attempt)
        return self.enter(Step.Status.RUNNING, started, now, attempts=attempt)

    def enter(
        self, status: str, event: tuple[str, dict[str, Any]], now: datetime, attempts: int | None
    ) -> int:
        """Record the call's step (new) or move it (existing) to ``status``; return its id."""
        if self.record is None:
            step_id, _ = self.ctx._record(
                self.position,
                "call",
                self.tool.name,
                self.args_json,
                self.digest,
                status=status,
                attempts=attempts or 0,
                started_at=now,
                event=event,
            )
            return step_id
        store.update_step(
            self.ctx._fence, self.record.id, status=status, attempts=attempts, event=event
        )
        return self.record.id

    def _throttle(self, step_id: int, attempt: int, gate: admission.Admission) -> None:
        """Hand the attempt back, park the call until it is admitted, and suspend."""
        wake_at = gate.wake_at
        store.update_step(
            self.ctx._fence,
            step_id,
            status=Step.Status.SCHEDULED,
            attempts=attempt - 1,
            wake_at=wake_at,
            rate_slot=gate.booked,
            event=self._event("step.throttled", reason=gate.reason, wake_at=wake_at.isoformat()),
        )
        raise Suspend(gate.reason, wake_at)

    def _call(
        self,
        step_id: int,
        kwargs: dict[str, Any],
        attempt: int,
        limits: Any,
        gate: admission.Admission,
    ) -> Any:
        if self.tool.takes_idempotency_key:
            kwargs["idempotency_key"] = self.ctx._key(self.position)
        if self.tool.takes_stop_requested and self.ctx._lease is not None:
            kwargs["stop_requested"] = self.ctx._lease.lost  # set by the heartbeat
        try:
            with contextlib.ExitStack() as held:
                if gate.slot:
                    held.enter_context(
                        leases.heartbeat.holding(admission.SlotLease(limits, gate.slot))
                    )
                self.reservation.used = True
                result = call_with_timeout(
                    self.tool.fn, kwargs, self.tool.timeout, f"tool {self.tool.name}"
                )
            output_json = dumps(result, what=f"output of tool {self.tool.name} at {self.where}")
        except Exception as exc:
            retryable = not isinstance(exc, (*self.tool.non_retryable, PayloadError))
            if retryable and attempt <= self.tool.retries:
                return self._schedule_retry(step_id, attempt, exc)
            return self._fail(step_id, attempt, exc)
        return store.update_step(
            self.ctx._fence,
            step_id,
            status=Step.Status.SUCCEEDED,
            output_json=output_json,
            finished_at=timezone.now(),
            event=self._event("step.completed", attempt=attempt),
        )

    def _finish_new(self, status: str, **fields: Any) -> None:
        now = timezone.now()
        if self.record is None:
            self.ctx._record(
                self.position,
                "call",
                self.tool.name,
                self.args_json,
                self.digest,
                status=status,
                started_at=now,
                finished_at=now,
                event=self._event("step.failed", error=fields["error"]["message"]),
                **fields,
            )
        else:
            store.update_step(
                self.ctx._fence,
                self.record.id,
                status=status,
                finished_at=now,
                event=self._event("step.failed", error=fields["error"]["message"]),
                **fields,
            )

    def _schedule_retry(self, step_id: int, attempt: int, exc: Exception) -> Any:
        delay = min(self.tool.retry_backoff * 2 ** (attempt - 1), self.tool.retry_backoff_max)
        wake_at = timezone.now() + timedelta(seconds=delay)
        store.update_step(
            self.ctx._fence,
            step_id,
            status=Step.Status.SCHEDULED,
            attempts=attempt,
            error=error_record(exc),
            wake_at=wake_at,
            event=self._event(
                "step.retrying", attempt=attempt, error=str(exc), wake_at=wake_at.isoformat()
            ),
        )
        raise Suspend(
            f"tool {self.tool.name} failed attempt {attempt} ({type(exc).__name__}: {exc}); "
            f"retrying at {wake_at.isoformat()}",
            wake_at,
        )

    def _fail(self, step_id: int, attempts: int, exc: BaseException) -> Any:
        error = tool_error(self.tool.name, self.where, attempts, exc)
        store.update_step(
            self.ctx._fence,
            step_id,
            status=Step.Status.FAILED,
            attempts=attempts,
            error=error_record(exc, message=str(error), tool=self.tool.name, attempts=attempts),
            finished_at=timezone.now(),
            event=self._event("step.failed", error=str(error)),
        )
        raise error from exc

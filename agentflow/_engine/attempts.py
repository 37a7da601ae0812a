"""One tool attempt, the same for ``ctx.call`` and for fan-out children.

The pipeline: budget reserve (given back if the tool never ran), the dead-worker check,
admission through the rate limit and concurrency gates, the call under its timeout (or
inside the step's transaction for ``atomic`` tools), and the retry-or-fail decision with
exponential backoff. Only how each outcome is stored differs: that is the caller's
``Outcome``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, Protocol

from agentflow import _registry as registry
from agentflow import _tracing as tracing
from agentflow._definitions import ToolDefinition
from agentflow._engine import leases
from agentflow._engine.call_ids import CallKey, Waiter
from agentflow._engine.errors import tool_error
from agentflow._engine.interrupts import unavailable_as_interrupt
from agentflow._engine.ports import dispatcher
from agentflow._engine.serialize import dumps
from agentflow._engine.state import sql
from agentflow._engine.timeouts import call_with_timeout
from agentflow._guardrails import admission, budgets
from agentflow._guardrails.limits import limits_for
from agentflow.exceptions import PayloadError, UnknownTool
from agentflow.models import clock


class Outcome(Protocol):
    """How one kind of call stores its attempt's outcome."""

    def throttled(self, attempt: int, gate: admission.Admission) -> Any:
        """Hand the attempt back (it does not count) and come back when admitted."""

    def retrying(self, attempt: int, exc: Exception, wake_at: datetime) -> Any:
        """Record a failed attempt that will be tried again at ``wake_at``."""

    def succeeded(self, attempt: int, output_json: str) -> Any:
        """Record the result (inside the tool's transaction, for atomic tools)."""

    def committed(self, recorded: Any) -> Any:
        """After the result's commit: what the caller returns."""

    def failed(self, attempts: int, exc: BaseException, error: Exception) -> Any:
        """Record the final failure (``error`` is the ToolError the agent sees)."""


def queue_of(tool_name: str) -> str | None:
    """The queue a tool's calls run on (None: agentflow's own)."""
    try:
        return registry.get_tool(tool_name).queue
    except UnknownTool:
        return None


def wake(waiters: list[str]) -> None:
    """Dispatch the calls a freed concurrency slot admits next (``Waiter`` texts)."""
    send = dispatcher()
    for waiter in filter(None, map(Waiter.parse, waiters)):
        if waiter.step_id is not None:
            send.run_child(waiter.step_id, queue=queue_of(waiter.tool) if waiter.tool else None)
        else:
            send.advance(waiter.run_id)


def backoff(tool: ToolDefinition, attempt: int) -> timedelta:
    """The wait before attempt ``attempt + 1``: doubling, capped."""
    return timedelta(seconds=min(tool.retry_backoff * 2 ** (attempt - 1), tool.retry_backoff_max))


class Attempt:
    """Attempt number ``attempt`` of ``tool`` with ``kwargs``, stored through ``outcome``."""

    def __init__(
        self,
        tool: ToolDefinition,
        kwargs: dict[str, Any],
        *,
        attempt: int,
        where: str,
        key: CallKey,
        agent: str,
        owner_id: int | None,
        outcome: Outcome,
        stop: threading.Event | None = None,
        usage: budgets.Usage | None = None,
        span: str = "agentflow.tool",
    ) -> None:
        self.tool, self.kwargs, self.attempt = tool, kwargs, attempt
        self.where, self.key, self.agent, self.owner_id = where, key, agent, owner_id
        self.outcome, self.stop = outcome, stop
        self.estimate = usage
        self.span = span
        self.reservation = budgets.Reservation()
        self.held: list[leases.Renewable] = []  # renewed while the tool runs (a claim)

    # -- budget ---------------------------------------------------------------------

    @property
    def usage(self) -> budgets.Usage:
        """What one call is expected to spend (a model call's estimate, if given)."""
        return self.estimate or budgets.Usage(cost=self.tool.cost, tool_calls=1)

    def reserve(self, rows: list[Any], run_id: Any) -> None:
        """Hold the call's cost against ``rows``; ``BudgetExceeded`` if one has no room."""
        if rows:
            with unavailable_as_interrupt("reserving budget"):
                self.reservation = budgets.reserve(
                    rows, run_id, self.usage, f"tool {self.tool.name} at {self.where}"
                )

    @contextlib.contextmanager
    def budgeted(self) -> Iterator[None]:
        """Give the reservation back if the tool never ran."""
        try:
            yield
        finally:
            if not self.reservation.used:
                with unavailable_as_interrupt("releasing budget"):
                    budgets.release(self.reservation)

    # -- the attempt ----------------------------------------------------------------

    @property
    def worker_died_every_time(self) -> bool:
        """Every earlier attempt was cut off without an outcome: its worker died."""
        return self.attempt > self.tool.retries + 1

    def run(self, *, booked: datetime | None, member: str, waiter: str) -> Any:
        """Admit the call through its limits, run it, and store the outcome."""
        if self.worker_died_every_time:
            died = self.attempt - 1
            crash = RuntimeError(f"the worker died during each of the {died} attempts")
            return self.outcome.failed(died, crash, self._error(died, crash))
        with unavailable_as_interrupt("reading policies"):
            limits = limits_for(self.tool, self.agent, self.owner_id)
        gate = admission.Admission()
        if limits.any:
            gate = admission.admit(limits, member=member, booked=booked, waiter=waiter)
            if gate.delay:
                return self.outcome.throttled(self.attempt, gate)
        try:
            if gate.slot:
                self.held.append(admission.SlotLease(limits, gate.slot))
            return self._call()
        finally:
            wake(admission.release(limits, gate.slot))

    def _call(self) -> Any:
        with tracing.span(self.span, self._trace_attributes()):
            return self._call_traced()

    def _trace_attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            tracing.RUN_ID: self.key.run_id,
            tracing.POSITION: self.key.position,
            tracing.TOOL: self.tool.name,
            tracing.ATTEMPT: self.attempt,
        }
        if self.key.index is not None:
            attributes[tracing.INDEX] = self.key.index
        return attributes

    def _call_traced(self) -> Any:
        tool, kwargs = self.tool, dict(self.kwargs)
        if tool.takes_idempotency_key:
            kwargs["idempotency_key"] = str(self.key)
        if tool.takes_stop_requested and self.stop is not None:
            kwargs["stop_requested"] = self.stop  # set by the heartbeat
        try:
            with contextlib.ExitStack() as held:
                for renewable in self.held:
                    held.enter_context(leases.heartbeat.holding(renewable))
                self.reservation.used = True
                if tool.atomic:
                    # The body's writes and the step's record commit together, or not at all.
                    with sql.atomic():
                        output_json = self._output(tool.fn(**kwargs))
                        recorded = self.outcome.succeeded(self.attempt, output_json)
                    return self.outcome.committed(recorded)
                result = call_with_timeout(tool.fn, kwargs, tool.timeout, f"tool {tool.name}")
            output_json = self._output(result)
        except Exception as exc:
            tracing.failed(tracing.current(), exc)
            retryable = not isinstance(exc, (*tool.non_retryable, PayloadError))
            if retryable and self.attempt <= tool.retries:
                wait = backoff(tool, self.attempt)
                asked = getattr(exc, "retry_after", None)  # a server's Retry-After
                if asked is not None:
                    wait = max(wait, timedelta(seconds=min(asked, tool.retry_backoff_max)))
                wake_at = clock.now() + wait
                return self.outcome.retrying(self.attempt, exc, wake_at)
            return self.outcome.failed(self.attempt, exc, self._error(self.attempt, exc))
        return self.outcome.committed(self.outcome.succeeded(self.attempt, output_json))

    def _output(self, result: Any) -> str:
        return dumps(result, what=f"output of tool {self.tool.name} at {self.where}")

    def _error(self, attempts: int, exc: BaseException) -> Exception:
        return tool_error(self.tool.name, self.where, attempts, exc)

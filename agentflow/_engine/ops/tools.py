"""``ctx.call``: policy, approval, budget and limits, then one attempt of the tool.

A tool on a queue of its own (``@tool(queue=...)``) is not run here: the call becomes a
one-child fan-out on that queue, and the run waits for it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agentflow import conf
from agentflow._definitions import ToolDefinition
from agentflow._engine import decisions
from agentflow._engine.attempts import Attempt
from agentflow._engine.call_ids import Waiter
from agentflow._engine.interrupts import Pause, Suspend, unavailable_as_interrupt
from agentflow._engine.journal import Entry, Journal
from agentflow._engine.ops import fan_out
from agentflow._engine.serialize import dumps, error_record
from agentflow._engine.state import sql
from agentflow._guardrails import admission, policy
from agentflow._guardrails.sealing import reveal
from agentflow.exceptions import BudgetExceeded, PayloadError, PolicyDenied, ToolArgumentError
from agentflow.models import Approval, Event, Step, clock


def routed(tool: ToolDefinition) -> bool:
    """Whether the tool's calls run on a queue other than agentflow's own."""
    return bool(tool.queue) and tool.queue != conf.setting("QUEUE")


def call(journal: Journal, tool: ToolDefinition, args: dict[str, Any]) -> Any:
    """Call a tool durably; its failure after retries raises ``ToolError`` here."""
    try:
        args_json = dumps(args, what=f"arguments of tool {tool.name}", sort_keys=True)
    except PayloadError as exc:
        raise ToolArgumentError(
            f"Tool '{tool.name}' was called with arguments it cannot store at run "
            f"{journal.run.id} position {journal.position}: {exc}",
            tool=tool.name,
        ) from None
    entry = journal.take(Step.Kind.CALL, tool.name, args_json)
    if entry.finished:
        return journal.replayed(entry.record)
    if routed(tool):
        return fan_out.routed_call(journal, entry, tool, args)
    return ToolStep(journal, entry, tool, args).run()


class ToolStep:
    """A ``ctx.call`` at a new (or unfinished) position, and how its attempts are stored."""

    SPAN = "agentflow.tool"  # the name of each attempt's trace span

    def __init__(
        self, journal: Journal, entry: Entry, tool: ToolDefinition, args: dict[str, Any]
    ) -> None:
        self.journal, self.entry, self.tool, self.args = journal, entry, tool, args
        self.record = entry.record
        self.where = f"run {journal.run.id} position {entry.position}"
        self.step_id = self.record.id if self.record is not None else None

    def run(self) -> Any:
        run = self.journal.run
        # Guardrails in order: policy, approval, budget, then rate limit and concurrency.
        with unavailable_as_interrupt("reading policies"):
            verdict = policy.check_tool(self.tool, run.agent, run.owner_id, self.args, self.where)
        if verdict.denied:
            denied = PolicyDenied(verdict.denied)
            self._refuse(denied)
        args = self.args
        if verdict.approval:
            args = self._approved_args(verdict.approval)
        try:
            kwargs = self.tool.validate(args)
        except ValueError as exc:
            self._refuse(
                ToolArgumentError(
                    f"Tool '{self.tool.name}' got invalid arguments at {self.where}: {exc}. "
                    "The tool did not run; fix the arguments in the agent code.",
                    tool=self.tool.name,
                    error_type="ToolArgumentError",
                )
            )
        return self._attempt(kwargs)

    def _attempt(self, kwargs: dict[str, Any], *, usage: Any = None) -> Any:
        """Reserve the budget, record the step as running, and run one attempt."""
        run, record, now = self.journal.run, self.record, clock.now()
        if record is not None and record.status == Step.Status.SCHEDULED and record.wake_at > now:
            raise Suspend(
                f"tool {self.tool.name} waits until {record.wake_at.isoformat()}", record.wake_at
            )
        attempt = Attempt(
            self.tool,
            kwargs,
            attempt=(record.attempts if record else 0) + 1,
            where=self.where,
            key=self.journal.key(self.entry.position),
            agent=run.agent,
            owner_id=run.owner_id,
            outcome=self,
            stop=self.journal.lease.lost,
            usage=usage,
            span=self.SPAN,
        )
        self.attempt = attempt
        with attempt.budgeted():
            try:
                attempt.reserve(self.journal.budgets(), run.id)
            except BudgetExceeded as exc:
                if record is None:  # nothing recorded here: resuming takes this position anew
                    self.journal.uncount_step()
                raise Pause(exc.hit) from None
            self._enter(
                Step.Status.RUNNING,
                self.entry.event(Event.Type.STEP_STARTED, attempt=attempt.attempt),
                attempts=attempt.attempt,
            )
            return attempt.run(
                booked=record.rate_slot if record is not None else None,
                member=f"{attempt.key}:{attempt.attempt}",
                waiter=str(Waiter.run(run.id)),
            )

    # -- recording ----------------------------------------------------------------------

    def _enter(self, status: str, event: Any, **fields: Any) -> int:
        """Record the call's step (new) or move it (existing) to ``status``; return its id."""
        if self.step_id is None:
            self.step_id, _ = self.journal.record(
                self.entry, status=status, started_at=clock.now(), event=event, **fields
            )
        else:
            self.journal.update(
                self.step_id, status=status, error=None, wake_at=None, event=event, **fields
            )
        return self.step_id

    def _refuse(self, error: Exception) -> None:
        """Fail the step before the tool ran (policy, approval, arguments) and raise."""
        fields = {
            "status": Step.Status.FAILED,
            "error": error_record(error),
            "finished_at": clock.now(),
            "event": self.entry.event(Event.Type.STEP_FAILED, error=str(error)),
        }
        if self.step_id is None:
            self.journal.record(self.entry, started_at=fields["finished_at"], **fields)
        else:
            self.journal.update(self.step_id, **fields)
        raise error from None

    # -- the attempt's outcomes (attempts.Outcome) ----------------------------------------

    def throttled(self, attempt: int, gate: admission.Admission) -> Any:
        wake_at = gate.wake_at
        self.journal.update(
            self.step_id,
            status=Step.Status.SCHEDULED,
            attempts=attempt - 1,
            wake_at=wake_at,
            rate_slot=gate.booked,
            event=self.entry.event(
                Event.Type.STEP_THROTTLED, reason=gate.reason, wake_at=wake_at.isoformat()
            ),
        )
        raise Suspend(gate.reason, wake_at)

    def retrying(self, attempt: int, exc: Exception, wake_at: datetime) -> Any:
        self.journal.update(
            self.step_id,
            status=Step.Status.SCHEDULED,
            attempts=attempt,
            error=error_record(exc),
            wake_at=wake_at,
            rate_slot=None,
            event=self.entry.event(
                Event.Type.STEP_RETRYING,
                attempt=attempt,
                error=str(exc),
                wake_at=wake_at.isoformat(),
            ),
        )
        raise Suspend(
            f"tool {self.tool.name} failed attempt {attempt} ({type(exc).__name__}: {exc}); "
            f"retrying at {wake_at.isoformat()}",
            wake_at,
        )

    def succeeded(self, attempt: int, output_json: str, usage: Any = None) -> Any:
        """Record the result; ``usage`` is a model call's (input tokens, output tokens, cost)."""
        columns: dict[str, Any] = {}
        details: dict[str, Any] = {"attempt": attempt}
        if usage is not None:
            columns["usage"] = usage
            details |= {"input_tokens": usage[0], "output_tokens": usage[1], "cost": str(usage[2])}
        return self.journal.update(
            self.step_id,
            status=Step.Status.SUCCEEDED,
            output_json=output_json,
            error=None,
            rate_slot=None,
            finished_at=clock.now(),
            event=self.entry.event(Event.Type.STEP_COMPLETED, **details),
            **columns,
        )

    def committed(self, recorded: Any) -> Any:
        return recorded

    def failed(self, attempts: int, exc: BaseException, error: Exception, usage: Any = None) -> Any:
        """Record the failure; ``usage`` as for ``succeeded`` (a model that answered)."""
        columns = {} if usage is None else {"usage": usage}
        self.journal.update(
            self.step_id,
            status=Step.Status.FAILED,
            attempts=attempts,
            error=error_record(exc, message=str(error), tool=self.tool.name, attempts=attempts),
            finished_at=clock.now(),
            event=self.entry.event(Event.Type.STEP_FAILED, error=str(error)),
            **columns,
        )
        raise error from exc

    # -- approval ---------------------------------------------------------------------

    def _approved_args(self, reason: str) -> dict[str, Any]:
        """The arguments an approved call runs with; else suspend, or refuse (PolicyDenied)."""
        approval = None
        if self.record is not None:
            approval = (
                Approval.objects.select_related("decided_by").filter(step_id=self.record.id).first()
            )
        if approval is None:
            self._request_approval(reason)
        assert approval is not None
        if approval.status == Approval.Status.PENDING:
            raise Suspend(decisions.waiting_reason(approval.title, self.entry.position, None))
        if not decisions.is_approved(approval):
            comment = f" ({approval.comment})" if approval.comment else ""
            self._refuse(
                PolicyDenied(
                    f"Tool '{self.tool.name}' was not approved at {self.where}: approval "
                    f"{approval.id} was {approval.status} by {decisions.who(approval)}{comment}. "
                    "The tool did not run."
                )
            )
        if approval.binding != decisions.binding(self.tool.name, self.entry.args_json):
            self._refuse(
                PolicyDenied(
                    f"Approval {approval.id} at {self.where} was given for other arguments of "
                    f"tool '{self.tool.name}' than the agent now passes; the tool did not run."
                )
            )
        edited = reveal(approval.data, approval.sealed_data)
        return self.args if edited is None else edited

    def _request_approval(self, reason: str) -> None:
        event = self.entry.event(Event.Type.APPROVAL_REQUESTED, reason=reason)
        with unavailable_as_interrupt(), sql.atomic():
            step_id = self._enter(Step.Status.WAITING, event)
            decisions.request_for_call(
                self.journal.run.id, step_id, self.entry.position, self.tool, self.args,
                self.entry.args_json, reason,
            )  # fmt: skip
        raise Suspend(
            f"waiting for approval to run tool {self.tool.name} (position "
            f"{self.entry.position}): {reason}"
        )

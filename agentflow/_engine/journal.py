"""The run's journal: positions, their recorded steps, events and the fence.

Every ``ctx`` operation takes the next position here. At a position that already has a
Step, the journal checks that the code asks for the same thing (kind, name, args hash)
and hands back the record; at a new one it applies the guards (loop guard, duration,
step budget) and records through the fence, so a writer that lost its lease cannot write.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentflow._engine.call_ids import CallKey
from agentflow._engine.errors import rebuild_exception
from agentflow._engine.interrupts import Interrupt, LeaseLost, Pause, unavailable_as_interrupt
from agentflow._engine.serialize import args_hash, shortened
from agentflow._engine.state import step_rows
from agentflow._guardrails import budgets, policy
from agentflow._guardrails.redaction import redact_text
from agentflow.exceptions import BudgetExceeded, NonDeterminismError
from agentflow.models import Step

if TYPE_CHECKING:
    from agentflow._engine.leases import Lease
    from agentflow.models import Run


class EndOfHistory(Interrupt):
    """Replay-only mode reached a position the history does not have."""

    def __init__(self, position: int, kind: str, name: str) -> None:
        super().__init__(f"position {position}: {kind} {name!r}")
        self.position, self.kind, self.name = position, kind, name


Event = tuple[str, dict[str, Any]]


@dataclass(slots=True)
class Entry:
    """A position the code just took: its args hash and its record, if it has one."""

    position: int
    kind: str
    name: str
    args_json: str
    digest: str
    record: step_rows.StepRecord | None

    @property
    def finished(self) -> bool:
        return self.record is not None and self.record.finished

    def event(self, type_: str, **extra: Any) -> Event:
        """An event about this position's step, named as its record is (already redacted)."""
        name = self.name if self.record is None else self.record.name
        return type_, {"position": self.position, "kind": self.kind, "name": name, **extra}


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON value (a scalar is its own copy)."""
    if isinstance(value, dict):
        return {key: copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_json(item) for item in value]
    return value


class Journal:
    """One advance's view of a run's history, and the only way to write to it."""

    def __init__(
        self, run: Run, history: dict[int, step_rows.StepRecord], *, lease: Lease | None = None
    ) -> None:
        self.run = run
        self.history = history
        self.lease = lease
        self.position = 0
        # Set while a ctx.step function runs: its key is the step's, and ctx calls are refused.
        self.step_position: int | None = None
        # Once set, every later call raises it: user code cannot catch its way past it.
        self.diverged: NonDeterminismError | None = None
        self._budget_rows: list[Any] | None = None
        # The step the loop guard counted for the newest position, until that step is recorded.
        self._counted_step = budgets.Reservation()

    @property
    def replaying(self) -> bool:
        """Replay-only (``agentflow.replay``): nothing may be written."""
        return self.lease is None

    @property
    def fence(self) -> step_rows.Fence:
        assert self.lease is not None, "a replay-only journal writes nothing"
        return self.lease.fence

    def key(self, position: int) -> CallKey:
        """The stable idempotency key of a position."""
        return CallKey(str(self.run.id), position)

    @property
    def current_key(self) -> CallKey:
        """The key of the ctx.step in progress, else of the next position."""
        return self.key(self.position if self.step_position is None else self.step_position)

    def peek(self) -> step_rows.StepRecord | None:
        """The record at the next position, without taking it."""
        return self.history.get(self.position)

    def replayed_as(self, kind: str, memo: Any) -> step_rows.StepRecord | None:
        """The next position's record if it finished and this process matched it with
        ``memo`` before; the position is then taken. None: take it the usual way.

        A loop replaying a long history calls this at every position, so it does nothing
        else: the record was checked against these very arguments when ``memo`` was set.
        """
        record = self.history.get(self.position)
        if (
            record is None
            or record.memo != memo
            or record.kind != kind
            or not record.finished
            or self.diverged is not None
            or self.step_position is not None
        ):
            return None
        self.position += 1
        return record

    def take(
        self,
        kind: str,
        name: str,
        args_json: str | Callable[[], str],
        digest: str | None = None,
        *,
        memo: Any = None,
    ) -> Entry:
        """Claim the next position and check it against history.

        ``args_json`` may be a function that encodes the arguments, and ``memo`` a cheap,
        exact key of them (types included): a record this process already matched with the
        same memo is not encoded and hashed again, so a loop's replay costs little.
        """
        if self.diverged is not None:
            raise self.diverged
        if self.step_position is not None:
            raise RuntimeError(
                f"ctx.{kind}() was called inside a ctx.step() function in run {self.run.id}; "
                "ctx calls cannot be nested. Call them from the agent body instead."
            )
        position = self.position
        self.position += 1
        record = self.history.get(position)
        if (
            memo is not None
            and record is not None
            and record.memo == memo
            and record.kind == kind
            and (self.lease is not None or record.finished)
        ):
            return Entry(position, kind, name, "", record.args_hash, record)
        if callable(args_json):
            args_json = args_json()
        digest = digest or args_hash(args_json)
        if record is not None:
            if record.args_hash != digest or record.kind != kind:
                self._diverge(position, record, kind, name, digest, args_json)
            if not step_rows.same_name(record.name, name):
                self._diverge(position, record, kind, name, digest, args_json)
            if self.lease is None and not record.finished:
                raise EndOfHistory(position, kind, name)  # replay stops where the run stopped
            record.memo = memo
        elif self.lease is None:
            raise EndOfHistory(position, kind, name)
        elif self.lease.lost.is_set():
            raise LeaseLost(f"run {self.run.id} was cancelled or taken over")
        else:
            self._guard(position, kind, name)
        return Entry(position, kind, name, args_json, digest, record)

    def _diverge(
        self,
        position: int,
        record: step_rows.StepRecord,
        kind: str,
        name: str,
        digest: str,
        args_json: str,
    ) -> None:
        asked = json.dumps(json.loads(args_json), sort_keys=True) if args_json else "none"
        recorded, asked = step_rows.recorded_args(record.id), shortened(redact_text(asked))
        same_call = record.kind == kind and step_rows.same_name(record.name, name)
        self.diverged = NonDeterminismError(
            f"Run {self.run.id} ({self.run.agent} version {self.run.agent_version}) "
            f"diverged from its history at position {position}: the history has "
            f"{record.kind} '{record.name}' with arguments {recorded}, the code now asks "
            f"for {kind} '{name}' with arguments {asked}. "
            + (
                "The same call with other arguments usually means the agent computed them "
                "from something that changes between executions: the clock (use ctx.now()), "
                "randomness (ctx.random(), ctx.uuid()) or I/O outside a step (wrap it in "
                "ctx.step). "
                if same_call
                else "Another call at this position usually means the agent's code changed "
                "while the run was in flight. "
            )
            + "Else deploy the code the run started with, guard the change with "
            "ctx.patched('change-id'), or cancel the run."
        )
        raise self.diverged

    def _guard(self, position: int, kind: str, name: str) -> None:
        """Before a new step: the loop guard, the run duration and step budgets."""
        with unavailable_as_interrupt("reading policies"):
            hit = policy.run_guard(self.run, position)
        if hit is None:
            try:
                self._counted_step = self.reserve(
                    budgets.Usage(steps=1), f"{kind} {name!r} at position {position}"
                )
            except BudgetExceeded as exc:
                hit = exc.hit
        if hit is not None:
            raise Pause(hit)

    def uncount_step(self) -> None:
        """Give back the newest position's step: it paused unrecorded and is taken again."""
        with unavailable_as_interrupt("releasing budget"):
            budgets.release(self._counted_step)
        self._counted_step = budgets.Reservation()

    def budgets(self) -> list[Any]:
        """The budgets that cover this run (read once per advance)."""
        if self._budget_rows is None:
            run = self.run
            with unavailable_as_interrupt("reading budgets"):
                self._budget_rows = budgets.for_run(
                    run.id, run.agent, run.owner_id, own=run.has_own_budget
                )
        return self._budget_rows

    def reserve(self, usage: budgets.Usage, what: str) -> budgets.Reservation:
        """Hold ``usage`` against the run's budgets; ``BudgetExceeded`` if one has no room."""
        rows = self.budgets()
        if not rows:
            return budgets.Reservation()
        with unavailable_as_interrupt("reserving budget"):
            return budgets.reserve(rows, self.run.id, usage, what)

    @staticmethod
    def replayed(record: step_rows.StepRecord) -> Any:
        """A finished step's outcome again: its output, or its error raised.

        A dict or list comes as a copy: the agent may change it, the record must not
        change (a worker keeps records across advances, see ``engine.history``).
        """
        if record.status == Step.Status.FAILED:
            raise rebuild_exception(record.kind, record.error or {})
        return copy_json(record.output)

    def record(self, entry: Entry, **fields: Any) -> tuple[int, Any]:
        """Record a new step at ``entry``'s position; return (step id, stored output)."""
        return step_rows.insert_step(
            self.fence,
            position=entry.position,
            kind=entry.kind,
            name=entry.name,
            args_json=entry.args_json,
            args_hash=entry.digest,
            key=str(self.key(entry.position)),
            **fields,
        )

    def update(self, step_id: int, **fields: Any) -> Any:
        """Move a recorded step on (only the columns passed change); return its output."""
        return step_rows.update_step(self.fence, step_id, **fields)

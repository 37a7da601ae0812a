"""``replay``: run agent code against a run's recorded history, with no side effects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agentflow import _registry as registry
from agentflow._engine.context import EndOfHistory, RunContext
from agentflow._engine.interrupts import Suspend
from agentflow._engine.serialize import dumps, loads
from agentflow._engine.state import step_rows
from agentflow._guardrails.redaction import redact_json
from agentflow.exceptions import NonDeterminismError, UnknownAgent
from agentflow.models import Run


@dataclass(frozen=True)
class Mismatch:
    """One place where the code and the history disagree."""

    position: int | None
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class ReplayReport:
    """What ``agentflow.replay`` found; ``ok`` is True when the code matches the history."""

    run_id: Any
    agent: str
    version: str
    steps_replayed: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def __str__(self) -> str:
        head = f"replay of run {self.run_id} on {self.agent} version {self.version}"
        if self.ok:
            return f"{head}: ok ({self.steps_replayed} steps match)"
        return f"{head}: {len(self.mismatches)} mismatch(es)\n" + "\n".join(
            f"  - {m}" for m in self.mismatches
        )


def replay(run: Run) -> ReplayReport:
    """Re-execute the agent deployed here on ``run``'s history and report divergence.

    Uses the run's own version when it is registered, else the newest one, so it
    answers "does the code deployed now still fit this history?".
    """
    try:
        definition = registry.get_agent(run.agent, run.agent_version)
    except UnknownAgent:
        definition = registry.get_agent(run.agent)
    history = step_rows.load_history(run.id)
    report = ReplayReport(run.id, run.agent, definition.version)
    ctx = RunContext(run, history)
    try:
        output = definition.fn(ctx, **run.real_input)
    except NonDeterminismError as exc:
        report.mismatches.append(Mismatch(ctx.position - 1, str(exc)))
        return report
    except EndOfHistory as end:
        if run.is_finished:
            report.mismatches.append(
                Mismatch(
                    end.position,
                    (
                        f"The code makes a new {end.kind} '{end.name}' at position {end.position}, "
                        f"but run {run.id} ended ({run.status}) with {len(history)} steps."
                    ),
                )
            )
        return _done(report, ctx)
    except Suspend:
        return _done(report, ctx)  # the history ends in a wait: nothing more to compare
    except Exception as exc:
        if ctx.diverged is not None:
            report.mismatches.append(Mismatch(ctx.position - 1, str(ctx.diverged)))
        elif run.status == Run.Status.SUCCEEDED:
            report.mismatches.append(
                Mismatch(
                    None,
                    (f"The code now raises {type(exc).__name__}: {exc}; run {run.id} succeeded."),
                )
            )
        return _done(report, ctx)
    if ctx.diverged is not None:
        report.mismatches.append(Mismatch(ctx.position - 1, str(ctx.diverged)))
    elif run.status == Run.Status.SUCCEEDED:
        # Compared as stored: the run's output was redacted when it was recorded.
        replayed = loads(redact_json(dumps(output, what="replayed output")))
        if replayed != run.output:
            report.mismatches.append(
                Mismatch(
                    None,
                    f"The code now returns {replayed!r}, but run {run.id} returned {run.output!r}.",
                )
            )
    return _done(report, ctx)


def _done(report: ReplayReport, ctx: RunContext) -> ReplayReport:
    report.steps_replayed = ctx.position
    unused = sorted(p for p in ctx.journal.history if p >= ctx.position)
    if unused and report.ok and ctx.run.is_finished:
        report.mismatches.append(
            Mismatch(
                unused[0],
                (
                    f"The code stops at position {ctx.position}, but the history has "
                    f"{len(unused)} more step(s) from position {unused[0]}."
                ),
            )
        )
    return report

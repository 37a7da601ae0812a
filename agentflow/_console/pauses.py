"""Why a paused run is paused, and whether resuming it now would only pause it again.

A guardrail pauses a run with the row that stopped it as data (``_guardrails.limit_hit``, in
the ``run.paused`` event). The resume view reads that back, looks at the row as it is
now, and says what still stops the run, so an operator who has not raised the limit yet
is told so instead of "resumed".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from agentflow._guardrails.budgets import DIMENSIONS, window
from agentflow._guardrails.limit_hit import BUDGET, MAX_DURATION, MAX_STEPS, LimitHit
from agentflow.models import Budget, BudgetSpend, Event, Policy, Run, clock


@dataclass(frozen=True)
class Blocker:
    """The limit that would pause the run again: a Budget or Policy row, and how."""

    row: Budget | Policy
    detail: str

    @property
    def kind(self) -> str:
        return "budget" if isinstance(self.row, Budget) else "policy"


def last_hit(run: Run) -> LimitHit | None:
    """The guardrail that paused the run last, from its newest ``run.paused`` event."""
    data = (
        Event.objects.filter(run_id=run.id, type=Event.Type.RUN_PAUSED)
        .order_by("-seq")
        .values_list("data", flat=True)
        .first()
    )
    if not isinstance(data, dict):
        return None
    return LimitHit.from_data(data.get("limit"), str(data.get("reason") or ""))


def still_blocked(run: Run) -> Blocker | None:
    """What still stops a paused run, if the limit that paused it is unchanged."""
    hit = last_hit(run)
    if hit is None:
        return None
    if hit.kind == BUDGET:
        return _budget(run, hit)
    policy = Policy.objects.filter(id=hit.row_id, enabled=True).first()
    if policy is None:
        return None  # deleted or disabled: it no longer stops the run
    if hit.limit == MAX_STEPS and policy.max_steps is not None and hit.position is not None:
        if hit.position >= policy.max_steps:
            return Blocker(
                policy, f"it allows {policy.max_steps} steps and the run is at {hit.position}"
            )
        return None
    if hit.limit == MAX_DURATION and policy.max_duration:
        ran: timedelta | None = run.started_at and clock.now() - run.started_at
        if ran and ran > policy.max_duration:
            return Blocker(policy, f"it allows runs of {policy.max_duration}; this one is older")
    return None


def _budget(run: Run, hit: LimitHit) -> Blocker | None:
    budget = Budget.objects.filter(id=hit.row_id, enabled=True).first()
    if budget is None or hit.limit not in DIMENSIONS or hit.need is None:
        return None  # deleted or disabled: it no longer stops the run
    dimension = hit.limit
    limit = getattr(budget, DIMENSIONS[dimension])
    if limit is None:
        return None
    spend = BudgetSpend.objects.filter(
        budget=budget, window=window(budget, run.id, clock.now())
    ).first()
    spent = getattr(spend, dimension) if spend is not None else 0
    if spent + hit.need <= limit:
        return None
    unit = "$" if dimension == "cost" else ""
    return Blocker(
        budget,
        f"{dimension.replace('_', ' ')} spent {unit}{_plain(spent)} of {unit}{_plain(limit)}, "
        f"and the next step needs {unit}{_plain(hit.need)} more",
    )


def _plain(value: Any) -> str:
    return f"{value.normalize():f}" if isinstance(value, Decimal) else str(value)

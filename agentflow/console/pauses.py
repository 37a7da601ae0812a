"""Why a paused run is paused, and whether resuming it now would only pause it again.

A guardrail pauses a run with a reason that names the budget or policy and the numbers
(``agentflow.gates.budgets`` and ``agentflow.gates.policy`` write them). The resume view
reads that reason back, looks at the limit as it is now, and says what still stops the
run, so an operator who has not raised the limit yet is told so instead of "resumed".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from agentflow.gates.budgets import DIMENSIONS, window
from agentflow.models import Budget, BudgetSpend, Policy, Run, clock

# The reasons of agentflow.gates.budgets._exhausted and agentflow.gates.policy.run_guard.
BUDGET = re.compile(
    r"Budget '(?P<name>.+?)' \(.*?\) is exhausted: (?P<dimension>[a-z ]+) spent "
    r"\$?(?P<spent>[0-9.]+) of \$?(?P<limit>[0-9.]+), and .* needs \$?(?P<need>[0-9.]+) more\."
)
STEPS = re.compile(
    r"Policy '(?P<name>.+?)' allows at most [0-9]+ steps per run .*? at position "
    r"(?P<position>[0-9]+)\."
)
DURATION = re.compile(r"Policy '(?P<name>.+?)' allows runs of .*? at most;")


@dataclass(frozen=True)
class Blocker:
    """The limit that would pause the run again: a Budget or Policy row, and how."""

    row: Budget | Policy
    detail: str

    @property
    def kind(self) -> str:
        return "budget" if isinstance(self.row, Budget) else "policy"


def still_blocked(run: Run) -> Blocker | None:
    """What still stops a paused run, if its reason names a limit that is unchanged."""
    reason = run.wait_reason or ""
    found = BUDGET.search(reason)
    if found:
        return _budget(run, found)
    found = STEPS.search(reason)
    if found:
        policy = Policy.objects.filter(name=found["name"], enabled=True).first()
        position = int(found["position"])
        if policy and policy.max_steps is not None and position >= policy.max_steps:
            return Blocker(
                policy, f"it allows {policy.max_steps} steps and the run is at {position}"
            )
        return None
    found = DURATION.search(reason)
    if found:
        policy = Policy.objects.filter(name=found["name"], enabled=True).first()
        ran: timedelta | None = run.started_at and clock.now() - run.started_at
        if policy and policy.max_duration and ran and ran > policy.max_duration:
            return Blocker(policy, f"it allows runs of {policy.max_duration}; this one is older")
        return None
    return None


def _budget(run: Run, found: Any) -> Blocker | None:
    budget = Budget.objects.filter(name=found["name"], enabled=True).first()
    dimension = found["dimension"].replace(" ", "_")
    if budget is None or dimension not in DIMENSIONS:
        return None  # deleted or disabled: it no longer stops the run
    limit = getattr(budget, DIMENSIONS[dimension])
    if limit is None:
        return None
    spend = BudgetSpend.objects.filter(
        budget=budget, window=window(budget, run.id, clock.now())
    ).first()
    spent = getattr(spend, dimension) if spend is not None else 0
    try:
        need = Decimal(found["need"])
    except InvalidOperation:
        return None
    if spent + need <= limit:
        return None
    unit = "$" if dimension == "cost" else ""
    return Blocker(
        budget,
        f"{dimension.replace('_', ' ')} spent {unit}{_plain(spent)} of {unit}{_plain(limit)}, "
        f"and the next step needs {unit}{_plain(need)} more",
    )


def _plain(value: Any) -> str:
    return f"{value.normalize():f}" if isinstance(value, Decimal) else str(value)

"""Rows that hold every fact a run depends on. The database is the truth.

Models import nothing from the gates or the engine: the field languages they validate
(name globs, conditions) and the sealing of their columns live beside them here.
"""

from agentflow.models.approvals import Approval
from agentflow.models.budgets import Budget, BudgetSpend
from agentflow.models.policies import Policy
from agentflow.models.runs import Event, Run, Signal, Step
from agentflow.models.schedules import Schedule

__all__ = [
    "Approval",
    "Budget",
    "BudgetSpend",
    "Event",
    "Policy",
    "Run",
    "Schedule",
    "Signal",
    "Step",
]

"""Budgets: reserve a step's estimated usage before it runs, settle the actual after.

A reservation is one conditional UPDATE per budget (``spend + estimate <= limit``), all in
one transaction, so concurrent fan-out children can never overspend: the database admits
exactly as many as fit. Settling adds the difference between actual and estimate. A
reservation whose worker dies before settling stays counted, which errs on the safe side.
Reading and reserving may raise the database's error; the engine decides what it means.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q

from agentflow import conf
from agentflow._guardrails.limit_hit import BUDGET, LimitHit
from agentflow.exceptions import BudgetExceeded, InvalidInput
from agentflow.models import clock
from agentflow.models.database import alias as database_alias
from agentflow.models.matching import matches

if TYPE_CHECKING:
    from agentflow.models import Budget

MILLION = Decimal(1_000_000)
DIMENSIONS = {
    "cost": "max_cost",
    "input_tokens": "max_input_tokens",
    "output_tokens": "max_output_tokens",
    "tool_calls": "max_tool_calls",
    "steps": "max_steps",
}
# What each limit of ``start(budget=...)`` takes, for messages (the columns' ranges).
_WHOLE = "a whole number from 0 to 9223372036854775807, or None for no limit"
ALLOWED = {
    "max_cost": "a number of US dollars from 0 to 99999999.999999 with at most 6 decimal "
    "places, as a string like '1.50' or a number; or None for no limit",
    "max_input_tokens": _WHOLE,
    "max_output_tokens": _WHOLE,
    "max_tool_calls": _WHOLE,
    "max_steps": _WHOLE,
}


@dataclass(frozen=True)
class Usage:
    """What a step spends (or is expected to)."""

    cost: Decimal = Decimal(0)
    input_tokens: int = 0
    output_tokens: int = 0
    tool_calls: int = 0
    steps: int = 0

    def minus(self, other: Usage) -> Usage:
        return Usage(**{name: getattr(self, name) - getattr(other, name) for name in DIMENSIONS})

    @property
    def empty(self) -> bool:
        return not any(getattr(self, name) for name in DIMENSIONS)


@dataclass
class Reservation:
    """Usage held against spend rows, to be settled once the step has run."""

    spend_ids: list[int] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    # Set once the step starts: from then on the usage is spent, whatever the outcome.
    used: bool = False


def price(model: str, input_tokens: int, output_tokens: int) -> Decimal:
    """The cost of a model call from AGENTFLOW['PRICES'] (dollars per million tokens)."""
    prices = conf.setting("PRICES").get(model)
    if prices is None:
        return Decimal(0)
    return (
        Decimal(str(prices.get("input", 0))) * input_tokens
        + Decimal(str(prices.get("output", 0))) * output_tokens
    ) / MILLION


_cache: dict[str, Any] = {"at": float("-inf"), "rows": []}


@conf.on_reload
def clear_cache(**kwargs: Any) -> None:
    """Forget cached budgets (on Budget saves and deletes in this process, and settings)."""
    _cache["at"] = float("-inf")


def _rows(run_id: UUID, own: bool) -> tuple[list[Any], list[Any]]:
    """(the run's own enabled budgets, the shared ones), in one query or none.

    Shared budgets are re-read at most every POLICY_CACHE_SECONDS; a run's own are always
    read fresh (they are made when the run starts), unless the caller knows it has none.
    """
    from agentflow.models import Budget

    now = time.monotonic()
    stale = now - _cache["at"] > conf.setting("POLICY_CACHE_SECONDS")
    if not (stale or own):
        return [], _cache["rows"]
    scope = Q(run__isnull=True) if stale else Q()
    if own:
        scope |= Q(run_id=run_id)
    rows = list(Budget.objects.filter(scope, enabled=True))
    if stale:
        _cache["rows"] = [b for b in rows if b.run_id is None]
        _cache["at"] = now
    return [b for b in rows if b.run_id is not None], _cache["rows"]


def for_run(run_id: UUID, agent: str, owner_id: int | None, *, own: bool = True) -> list[Any]:
    """The budgets whose scope covers the run: its own, and the shared ones that match.

    ``own=False`` says the run has no budget of its own (a fan-out child learns this in
    its claim), which saves a query per call.
    """
    own_rows, shared = _rows(run_id, own)
    shared = [
        b
        for b in shared
        if matches(b.agent, agent) and (b.owner_id is None or b.owner_id == owner_id)
    ]
    if any(b.group_id is not None for b in shared):
        groups = _groups_of(owner_id)
        shared = [b for b in shared if b.group_id is None or b.group_id in groups]
    return own_rows + shared


def _groups_of(owner_id: int | None) -> set[int]:
    if owner_id is None:
        return set()
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    return set(
        user_model.groups.through.objects.filter(
            **{f"{user_model._meta.model_name}_id": owner_id}
        ).values_list("group_id", flat=True)
    )


def window(budget: Any, run_id: UUID, now: datetime) -> str:
    """The spend row a step counts in: its run's, today's, this month's, or the total."""
    if budget.period == "run" or budget.run_id is not None:
        return f"run:{run_id}"
    if budget.period == "day":
        return f"day:{now:%Y-%m-%d}"
    if budget.period == "month":
        return f"month:{now:%Y-%m}"
    return "total"


def reserve(budgets: list[Any], run_id: UUID, usage: Usage, what: str) -> Reservation:
    """Hold ``usage`` against every budget, or none: raise ``BudgetExceeded`` naming one."""
    from agentflow.models import Budget, BudgetSpend

    if not budgets or usage.empty:
        return Reservation()
    now = clock.now()
    held = []
    with transaction.atomic(using=database_alias()):
        # Limits are read fresh: an operator who just raised one is obeyed at once.
        fresh = Budget.objects.filter(id__in=[b.id for b in budgets], enabled=True)
        for budget in sorted(fresh, key=lambda b: b.id):  # one lock order: no deadlocks
            spend, _ = BudgetSpend.objects.get_or_create(
                budget=budget, window=window(budget, run_id, now)
            )
            room = Q()
            for name, limit_field in DIMENSIONS.items():
                limit, amount = getattr(budget, limit_field), getattr(usage, name)
                if limit is not None and amount:
                    room &= Q(**{f"{name}__lte": limit - amount})
            increments = {name: F(name) + getattr(usage, name) for name in DIMENSIONS}
            if not BudgetSpend.objects.filter(room, id=spend.id).update(
                **increments, updated_at=now
            ):
                spend.refresh_from_db()
                hit = _exhausted(budget, spend, usage, what)
                raise BudgetExceeded(hit.reason, hit=hit)
            held.append(spend.id)
    return Reservation(held, usage)


def _exhausted(budget: Any, spend: Any, usage: Usage, what: str) -> LimitHit:
    for name, limit_field in DIMENSIONS.items():
        limit, amount = getattr(budget, limit_field), getattr(usage, name)
        if limit is not None and amount and getattr(spend, name) + amount > limit:
            unit = "$" if name == "cost" else ""
            reason = (
                f"Budget '{budget.name}' ({budget.get_period_display()}, {spend.window}) is "
                f"exhausted: {name.replace('_', ' ')} spent {unit}{getattr(spend, name)} of "
                f"{unit}{limit}, and {what} needs {unit}{amount} more. Raise the limit in the "
                "admin, then resume the run."
            )
            return LimitHit(BUDGET, budget.id, name, reason, need=Decimal(amount))
    # A concurrent change took the room between the refused update and this read.
    reason = f"Budget '{budget.name}' has no room for {what}."
    return LimitHit(BUDGET, budget.id, "", reason)


def settle(reservation: Reservation, actual: Usage) -> None:
    """Replace the reserved estimate with what the step really used."""
    from agentflow.models import BudgetSpend

    if not reservation.spend_ids:
        return
    delta = actual.minus(reservation.usage)
    if delta.empty:
        return
    BudgetSpend.objects.filter(id__in=reservation.spend_ids).update(
        **{name: F(name) + getattr(delta, name) for name in DIMENSIONS},
        updated_at=clock.now(),
    )


def release(reservation: Reservation) -> None:
    """Give back a reservation whose step did not run after all."""
    settle(reservation, Usage())


def run_budget(agent: str, limits: dict[str, Any] | None) -> Budget | None:
    """A run's own (unsaved) Budget from ``start(budget=...)``; InvalidInput naming the problem."""
    from agentflow.models import Budget

    if limits is None:
        return None
    if not isinstance(limits, dict) or not limits:
        raise InvalidInput(
            f"budget for agent '{agent}' must be a dict of limits, e.g. {{'max_cost': '1.00'}}"
        )
    unknown = set(limits) - set(Budget.LIMITS)
    if unknown:
        raise InvalidInput(
            f"budget for agent '{agent}' has unknown limit(s) {', '.join(sorted(unknown))}; "
            f"use {', '.join(Budget.LIMITS)}."
        )
    budget = Budget(period=Budget.Period.RUN, name="run budget", **limits)
    try:
        budget.full_clean(exclude=["name", "run"])
    except ValidationError as exc:
        problems = "; ".join(
            f"{field}={_shown(limits.get(field))}: {_cut(' '.join(msgs))} ({ALLOWED[field]})"
            if field in ALLOWED and field in limits
            else f"{field}: {_cut(' '.join(msgs))}"
            for field, msgs in exc.message_dict.items()
        )
        raise InvalidInput(f"budget for agent '{agent}' is invalid: {problems}") from None
    return budget


def _shown(value: Any) -> str:
    """A limit as given, cut short for a message."""
    try:
        return _cut(repr(value), 60)
    except ValueError:  # an integer past sys.get_int_max_str_digits()
        return f"<an integer of {value.bit_length():,} bits>"


def _cut(text: str, limit: int = 200) -> str:
    """``text`` cut short (Django's messages may quote the whole value)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more)"

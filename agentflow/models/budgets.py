"""Budgets and what the runs in their scope spent, window by window."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from agentflow.models.runs import Run
from agentflow.models.validation import budget_errors


class Budget(models.Model):
    """A spending limit for the runs in its scope, over a period; spend is kept per window.

    Every blank scope field matches everything, so a budget with no scope covers all runs.
    """

    class Period(models.TextChoices):
        RUN = "run", "per run"
        DAY = "day", "per day (UTC)"
        MONTH = "month", "per month (UTC)"
        TOTAL = "total", "in total"

    name = models.CharField(max_length=200, unique=True)
    enabled = models.BooleanField(default=True)
    agent = models.CharField(
        max_length=200, blank=True, default="", help_text="agent name or glob; blank for all"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="agentflow_budgets",
        help_text="runs owned by this user only; blank for everyone",
    )
    group = models.ForeignKey(
        "auth.Group",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="agentflow_budgets",
        help_text="runs whose owner is in this group only; blank for everyone",
    )
    run = models.ForeignKey(
        Run,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="budgets",
        help_text="this one run only",
    )
    period = models.CharField(max_length=8, choices=Period.choices, default=Period.RUN)
    max_cost = models.DecimalField(
        max_digits=14,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="US dollars; blank: no cost limit",
    )
    max_input_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    max_output_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    max_tool_calls = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="tool calls, fan-out children included"
    )
    max_steps = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="ctx calls of any kind (a fan-out counts once)"
    )
    updated_at = models.DateTimeField(auto_now=True)

    LIMITS = ("max_cost", "max_input_tokens", "max_output_tokens", "max_tool_calls", "max_steps")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Save, and mark the run it covers: runs without one of their own skip the query."""
        super().save(*args, **kwargs)
        field = self._meta.get_field("run")
        known = self.run if field.is_cached(self) else None  # start() passes its new run
        if self.run_id is not None and not (known is not None and known.has_own_budget):
            Run.objects.filter(id=self.run_id, has_own_budget=False).update(has_own_budget=True)

    def clean(self) -> None:
        errors = budget_errors(self)
        if errors:
            raise ValidationError(errors)


class BudgetSpend(models.Model):
    """What the runs in a budget's scope spent in one window (a run, a day, a month, ever).

    Reservations are added before a step and corrected when it settles.
    """

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="spends")
    window = models.CharField(max_length=64)
    cost = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    tool_calls = models.BigIntegerField(default=0)
    steps = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["budget", "-window"]
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "window"], name="agentflow_budgetspend_unique_window"
            )
        ]

    def __str__(self) -> str:
        return f"{self.budget} {self.window}: ${self.cost}"

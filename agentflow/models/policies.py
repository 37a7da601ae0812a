"""Policy rows: runtime rules on tools and runs, edited in the admin."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from agentflow.models.validation import policy_errors


class Policy(models.Model):
    """A runtime rule on tools and runs, edited in the admin.

    A row matches a call when its tool glob, agent glob and owner match (blank matches all)
    and its condition (if any) holds for the call's arguments. Deny wins over allow; any
    matching approval rule sends the call to a person first. Rate and concurrency limits
    come from the most specific matching row. Loop guard and duration apply to runs of the
    matching agents and owners. Redaction patterns apply to every run. Workers see changes
    within POLICY_CACHE_SECONDS.
    """

    class Effect(models.TextChoices):
        NONE = "", "none (limits and run rules only)"
        ALLOW = "allow", "allow the tool"
        DENY = "deny", "deny the tool"
        APPROVE = "approve", "require a person's approval"

    name = models.CharField(max_length=200, unique=True)
    enabled = models.BooleanField(default=True)
    tool = models.CharField(
        max_length=300,
        blank=True,
        default="",
        help_text="tool name or glob, e.g. 'billing.*' or 'search.web'; blank for all",
    )
    agent = models.CharField(
        max_length=200, blank=True, default="", help_text="agent name or glob; blank for all"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="agentflow_policies",
        help_text="apply to this owner's runs only; blank for everyone",
    )
    effect = models.CharField(max_length=10, choices=Effect.choices, blank=True, default="")
    condition = models.CharField(
        max_length=500,
        blank=True,
        default="",
        help_text="only when the tool's arguments satisfy this, e.g. 'amount > 1000' or "
        "\"currency == 'EUR' and amount >= 50\"; blank: always",
    )
    per_agent = models.BooleanField(
        default=False, help_text="count the limit separately for each agent"
    )
    per_owner = models.BooleanField(
        default=False, help_text="count the limit separately for each owner"
    )
    rate_limit = models.CharField(
        max_length=20,
        blank=True,
        default="",
        help_text="'N/s', 'N/m', 'N/h' or 'N/d'; blank: keep the tool's",
    )
    max_concurrency = models.PositiveIntegerField(
        null=True, blank=True, help_text="overlapping calls allowed; blank: keep the tool's"
    )
    max_steps = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="loop guard: a run that reaches this many steps pauses; blank: no limit",
    )
    max_duration = models.DurationField(
        null=True,
        blank=True,
        help_text="a run older than this (since it started) pauses at its next step, "
        "e.g. '01:00:00'; blank: no limit",
    )
    redact = models.TextField(
        blank=True,
        default="",
        help_text="regular expressions, one per line, redacted from everything stored or "
        "published (in addition to AGENTFLOW['REDACT'])",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "policies"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def redact_patterns(self) -> list[str]:
        """The non-blank lines of ``redact``."""
        return [line.strip() for line in self.redact.splitlines() if line.strip()]

    def clean(self) -> None:
        errors = policy_errors(self)
        if errors:
            raise ValidationError(errors)

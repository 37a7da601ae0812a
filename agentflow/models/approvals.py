"""Approvals: questions to a person, from ``ctx.approve`` or a tool call that needs one."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from agentflow.models.runs import Run, Step
from agentflow.models.validation import approval_errors


class Approval(models.Model):
    """A question to a person: ``ctx.approve`` or a tool call that needs approval."""

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"
        EXPIRED = "expired"

    class Default(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="approvals")
    step = models.OneToOneField(
        Step, null=True, blank=True, on_delete=models.CASCADE, related_name="approval"
    )
    position = models.PositiveIntegerField()
    index = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    title = models.CharField(max_length=300)
    # What the reviewer sees: the agent's data, or the tool and its (redacted) arguments.
    request = models.JSONField(default=dict, blank=True)
    # The real data or arguments where redaction changed what ``request`` shows, encrypted:
    # a reviewer who edits one field keeps the real value of the redacted fields left alone.
    sealed_request = models.TextField(null=True, blank=True, editable=False)
    # JSON Schema of the data the reviewer may fill in or edit.
    schema = models.JSONField(null=True, blank=True)
    # For a tool call: the tool and the hash of the arguments this approval is bound to.
    tool = models.CharField(max_length=300, blank=True, default="")
    binding = models.CharField(max_length=32, blank=True, default="")
    default = models.CharField(max_length=10, choices=Default.choices, default=Default.REJECT)
    expires_at = models.DateTimeField(null=True, blank=True)
    data = models.JSONField(null=True, blank=True)
    # The reviewer's real data where redaction changed the stored copy, encrypted.
    sealed_data = models.TextField(null=True, blank=True, editable=False)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="agentflow_decisions",
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("decide_approval", "Can approve or reject what agents ask")]
        indexes = [models.Index(fields=["status", "expires_at"], name="agentflow_approval_due")]

    def __str__(self) -> str:
        return f"{self.title} ({self.status})"

    @property
    def is_decided(self) -> bool:
        return self.status != self.Status.PENDING

    def clean(self) -> None:
        errors = approval_errors(self)
        if errors:
            raise ValidationError(errors)

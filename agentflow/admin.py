"""Admin pages: read-only runs, steps and events; Policy and Budget forms; approvals.

The operator console (live timelines, Approve/Reject buttons, actions) is built on these
later; decisions go through ``agentflow.approve``/``reject`` and the decide view.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin

from agentflow.gates import validation
from agentflow.gates.redaction import redact_text
from agentflow.models import Approval, Budget, BudgetSpend, Event, Policy, Run, Step


class ReadOnlyMixin:
    """Runs are changed by the runtime and the API, never by editing rows."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class StepInline(ReadOnlyMixin, admin.TabularInline):
    model = Step
    extra = 0
    can_delete = False
    fields = (
        "position",
        "index",
        "kind",
        "name",
        "status",
        "attempts",
        "started_at",
        "finished_at",
    )
    readonly_fields = fields
    show_change_link = True


@admin.register(Run)
class RunAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("id", "agent", "agent_version", "status", "created_at", "finished_at")
    list_filter = ("status", "agent")
    search_fields = ("=id", "agent", "idempotency_key")
    date_hierarchy = "created_at"
    inlines = [StepInline]


@admin.register(Step)
class StepAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("run", "position", "index", "kind", "name", "status", "attempts")
    list_filter = ("status", "kind")
    search_fields = ("=run__id", "name", "idempotency_key")


@admin.register(Event)
class EventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("run", "seq", "type", "created_at")
    list_filter = ("type",)
    search_fields = ("=run__id", "type")


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    """Limits take effect on every worker within AGENTFLOW['POLICY_CACHE_SECONDS']."""

    list_display = (
        "name",
        "enabled",
        "effect",
        "tool",
        "agent",
        "owner",
        "condition",
        "rate_limit",
        "max_concurrency",
        "max_steps",
    )
    list_filter = ("enabled", "effect")
    search_fields = ("name", "tool", "agent")
    fieldsets = (
        (None, {"fields": ("name", "enabled")}),
        ("Applies to", {"fields": ("tool", "agent", "owner")}),
        ("Allow, deny, approval", {"fields": ("effect", "condition")}),
        ("Limits", {"fields": ("rate_limit", "max_concurrency", "per_agent", "per_owner")}),
        ("Runs", {"fields": ("max_steps", "max_duration")}),
        ("Redaction", {"fields": ("redact",)}),
    )


class BudgetSpendInline(ReadOnlyMixin, admin.TabularInline):
    model = BudgetSpend
    extra = 0
    can_delete = False
    fields = ("window", "cost", "input_tokens", "output_tokens", "tool_calls", "steps")
    readonly_fields = fields


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    """Raising a limit takes effect at once; resume the runs it paused afterwards."""

    list_display = ("name", "enabled", "period", "agent", "owner", "group", "run", "max_cost")
    list_filter = ("enabled", "period")
    search_fields = ("name", "agent")
    raw_id_fields = ("run",)
    inlines = [BudgetSpendInline]
    fieldsets = (
        (None, {"fields": ("name", "enabled", "period")}),
        ("Applies to", {"fields": ("agent", "owner", "group", "run")}),
        (
            "Limits",
            {
                "fields": (
                    "max_cost",
                    "max_input_tokens",
                    "max_output_tokens",
                    "max_tool_calls",
                    "max_steps",
                )
            },
        ),
    )


class ApprovalForm(forms.ModelForm):
    """An operator may fix the schema, the default or the deadline of a pending approval."""

    class Meta:
        model = Approval
        fields = ("title", "schema", "default", "expires_at")

    def clean_title(self) -> str:
        return redact_text(self.cleaned_data["title"])  # stored like the runtime's titles

    def clean_schema(self):
        schema = self.cleaned_data.get("schema")
        if schema is not None:
            try:
                validation.check_schema(schema)
            except ValueError as exc:
                raise forms.ValidationError(str(exc)) from None
        return schema


@admin.register(Approval)
class ApprovalAdmin(admin.ModelAdmin):
    """Pending questions and the audit of every decision (who, when, data, comment)."""

    form = ApprovalForm
    list_display = ("id", "title", "run", "status", "created_at", "expires_at", "decided_by")
    list_filter = ("status",)
    search_fields = ("=run__id", "title", "tool")
    readonly_fields = (
        "run",
        "position",
        "index",
        "status",
        "tool",
        "request_json",
        "decided_by",
        "decided_at",
        "data",
        "comment",
    )

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # agents ask; people answer

    def has_change_permission(self, request, obj=None) -> bool:
        decided = obj is not None and obj.is_decided
        return not decided and super().has_change_permission(request, obj)

    @admin.display(description="request")
    def request_json(self, obj: Approval) -> str:
        return json.dumps(obj.request, indent=2, sort_keys=True)  # the admin escapes it

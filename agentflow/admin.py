"""Read-only admin pages for runs and their steps.

The operator console (live timelines, approvals, actions) is built on these later.
"""

from __future__ import annotations

from django.contrib import admin

from agentflow.models import Event, Policy, Run, Step


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

    list_display = ("name", "enabled", "tool", "agent", "owner", "rate_limit", "max_concurrency")
    list_filter = ("enabled",)
    search_fields = ("name", "tool", "agent")
    fieldsets = (
        (None, {"fields": ("name", "enabled")}),
        ("Applies to", {"fields": ("tool", "agent", "owner")}),
        ("Limits", {"fields": ("rate_limit", "max_concurrency", "per_agent", "per_owner")}),
    )

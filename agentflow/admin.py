"""Admin pages: the operator console for runs and approvals; Policy and Budget forms.

Rows a run depends on (runs, steps, events, signals, approvals, budget spend) are never
edited or deleted here: the runtime and the public API change them, with their checks,
events and audit. Runs open on the console's run page (``agentflow._console``); decisions
go through the decide view; actions call ``agentflow.cancel``/``resume``/``fork``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.urls import URLPattern, reverse
from django.utils.html import format_html

from agentflow import permissions
from agentflow._console.approval_form import review_form
from agentflow._console.approval_queue import ApprovalQueueMixin
from agentflow._console.csp import protect
from agentflow._console.overview import ApprovalAgentLookupMixin, RunOverviewMixin
from agentflow._console.runs import RunConsoleMixin
from agentflow._console.schedules import ScheduleAdmin, ScheduleConsoleMixin
from agentflow._console.start import StartRunMixin
from agentflow._guardrails.budgets import DIMENSIONS
from agentflow.models import (
    Approval,
    Budget,
    BudgetSpend,
    Event,
    Policy,
    Run,
    Schedule,
    Signal,
    Step,
)

SPEND_WINDOWS_SHOWN = 24


class ConsolePolicyMixin:
    """Every admin page of agentflow's models carries the console's Content-Security-Policy.

    They show tool output and model text; the header keeps a rendering mistake from
    becoming script execution on lists and forms too, not only on the console's own views.
    """

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        return protect(super().changelist_view(request, extra_context))  # type: ignore[misc]

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: Any = None,
        form_url: str = "",
        extra_context: Any = None,
    ) -> HttpResponse:
        return protect(
            super().changeform_view(request, object_id, form_url, extra_context)  # type: ignore[misc]
        )

    def history_view(
        self, request: HttpRequest, object_id: Any, extra_context: Any = None
    ) -> HttpResponse:
        return protect(super().history_view(request, object_id, extra_context))  # type: ignore[misc]

    def delete_view(
        self, request: HttpRequest, object_id: Any, extra_context: Any = None
    ) -> HttpResponse:
        return protect(super().delete_view(request, object_id, extra_context))  # type: ignore[misc]


class RunScopedMixin:
    """Rows of runs (steps, events, signals, approvals) show only for runs the user may view.

    ``AGENTFLOW["RUN_VIEW_RULE"]`` applies to lists and detail pages alike: a row of a run
    the rule hides is not listed, and its page answers as if it did not exist.
    """

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        rows = super().get_queryset(request)  # type: ignore[misc]
        return rows.filter(run__in=permissions.visible_runs(request.user, Run.objects.all()))


class ReadOnlyMixin:
    """Runs are changed by the runtime and the API, never by editing or deleting rows."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def status_badge(status: str, run_id: Any = None) -> str:
    """A status badge; a run's badge carries its id so the list socket can update it."""
    if run_id is None:
        return format_html('<span class="af-status af-status--{}">{}</span>', status, status)
    return format_html(
        '<span class="af-status af-status--{}" data-run-status="{}">{}</span>',
        status,
        run_id,
        status,
    )


class WaitingOnPersonFilter(admin.SimpleListFilter):
    """Runs with a pending approval: someone has to decide before they go on."""

    title = "waiting on a person"
    parameter_name = "waiting_on_person"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "yes"), ("no", "no")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Run]) -> QuerySet[Run]:
        pending = Exists(
            Approval.objects.filter(run=OuterRef("pk"), status=Approval.Status.PENDING)
        )
        if self.value() == "yes":
            return queryset.filter(pending)
        if self.value() == "no":
            return queryset.exclude(pending)
        return queryset


@admin.register(Run)
class RunAdmin(
    ConsolePolicyMixin,
    RunConsoleMixin,
    RunOverviewMixin,
    ScheduleConsoleMixin,
    StartRunMixin,
    ReadOnlyMixin,
    admin.ModelAdmin,
):
    list_display = (
        "id",
        "agent",
        "agent_version",
        "status_column",
        "owner",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "agent", WaitingOnPersonFilter)
    list_select_related = ("owner",)
    date_hierarchy = "created_at"
    change_list_template = "admin/agentflow/run/change_list.html"

    class Media:
        css = {"all": ("agentflow/console.css",)}
        js = ("agentflow/socket.js", "agentflow/runs_list.js")

    def get_search_fields(self, request: HttpRequest) -> tuple[str, ...]:
        username = get_user_model().USERNAME_FIELD
        return ("=id", "agent", f"owner__{username}", "idempotency_key")

    def get_urls(self) -> list[URLPattern]:
        return [
            *self.console_urls(),
            *self.schedule_urls(),
            *self.start_urls(),
            *self.overview_urls(),
            *super().get_urls(),
        ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Run]:
        return permissions.visible_runs(request.user, super().get_queryset(request))

    @admin.display(description="status", ordering="status")
    def status_column(self, run: Run) -> str:
        return status_badge(run.status, run.id)


admin.site.register(Schedule, ScheduleAdmin)


@admin.register(Step)
class StepAdmin(ConsolePolicyMixin, RunScopedMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "run", "position", "index", "kind", "name", "status", "attempts",
        "input_tokens", "output_tokens", "cost",
    )  # fmt: skip
    list_filter = ("status", "kind")
    search_fields = ("=run__id", "name", "idempotency_key")
    raw_id_fields = ("run",)


@admin.register(Event)
class EventAdmin(ConsolePolicyMixin, RunScopedMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("run", "seq", "type", "created_at")
    list_filter = ("type",)
    search_fields = ("=run__id", "type")
    raw_id_fields = ("run",)


@admin.register(Signal)
class SignalAdmin(ConsolePolicyMixin, RunScopedMixin, ReadOnlyMixin, admin.ModelAdmin):
    """Signals sent to runs; ``consumed_position`` is the wait that took each one."""

    list_display = ("run", "name", "created_at", "consumed_position")
    search_fields = ("=run__id", "name")
    exclude = ("sealed_data",)
    raw_id_fields = ("run",)


@admin.register(Policy)
class PolicyAdmin(ConsolePolicyMixin, admin.ModelAdmin):
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


@admin.register(Budget)
class BudgetAdmin(ConsolePolicyMixin, admin.ModelAdmin):
    """Raising a limit takes effect at once; resume the runs it paused afterwards."""

    list_display = (
        "name",
        "enabled",
        "period",
        "agent",
        "owner",
        "group",
        "run",
        "max_cost",
        "latest_cost",
    )
    list_filter = ("enabled", "period")
    search_fields = ("name", "agent")
    raw_id_fields = ("run",)
    readonly_fields = ("spend",)

    class Media:
        css = {"all": ("agentflow/console.css",)}

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
        ("Spend against the limits, per window", {"fields": ("spend",)}),
    )
    # What each limit counts: model calls reserve an estimate and settle what was reported.
    LIMIT_HELP = {
        "max_cost": "US dollars; blank: no cost limit. Counts model calls (priced with "
        "AGENTFLOW['PRICES'] from the tokens the server reports) and the fixed cost= of tools.",
        "max_input_tokens": "Prompt tokens of model calls (ctx.llm), as the server reports "
        "them; blank: no limit. A call reserves its estimate first (~4 characters a token).",
        "max_output_tokens": "Completion tokens of model calls, as reported; blank: no limit. "
        "A call reserves its max_tokens (1024 if unset) first, so the limit trips before a "
        "call that could overrun it.",
    }

    def get_form(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, **kwargs)
        for name, text in self.LIMIT_HELP.items():
            if name in form.base_fields:
                form.base_fields[name].help_text = text
        return form

    def get_queryset(self, request: HttpRequest) -> QuerySet[Budget]:
        latest = BudgetSpend.objects.filter(budget=OuterRef("pk")).order_by("-updated_at")
        return (
            super().get_queryset(request).annotate(_latest_cost=Subquery(latest.values("cost")[:1]))
        )

    @admin.display(description="spent (latest window)")
    def latest_cost(self, budget: Budget) -> str:
        cost = getattr(budget, "_latest_cost", None)
        return "-" if cost is None else f"${cost.normalize():f}"

    @admin.display(description="spend")
    def spend(self, budget: Budget) -> str:
        """Each recent window's spend against each limit (the template escapes values)."""
        if budget.pk is None:
            return "-"
        spends = list(budget.spends.order_by("-updated_at")[: SPEND_WINDOWS_SHOWN + 1])
        limits = [
            (name.replace("_", " "), _plain(getattr(budget, field)))
            for name, field in DIMENSIONS.items()
        ]
        rows = [
            (
                spend.window,
                [
                    _cell(getattr(spend, name), getattr(budget, field))
                    for name, field in DIMENSIONS.items()
                ],
                spend.updated_at,
            )
            for spend in spends[:SPEND_WINDOWS_SHOWN]
        ]
        return render_to_string(
            "admin/agentflow/budget/spend.html",
            {"limits": limits, "rows": rows, "more": len(spends) > SPEND_WINDOWS_SHOWN},
        )


def _plain(value: Any) -> Any:
    """A Decimal without trailing zeros (2, not 2.000000); anything else as it is."""
    return f"{value.normalize():f}" if isinstance(value, Decimal) else value


def _cell(spent: Any, limit: Any) -> tuple[Any, Any, int | None]:
    spent, limit = _plain(spent), _plain(limit)
    if limit is None:
        return spent, None, None
    percent = 100 if not limit else int(Decimal(spent) * 100 / Decimal(limit))
    return spent, limit, percent


@admin.register(Approval)
class ApprovalAdmin(
    ConsolePolicyMixin,
    ApprovalQueueMixin,
    ApprovalAgentLookupMixin,
    RunScopedMixin,
    ReadOnlyMixin,
    admin.ModelAdmin,
):
    """Pending questions and the audit of every decision (who, when, data, comment).

    Nothing here is editable or deletable: a deleted pending approval would leave its run
    waiting for ever, a changed default or deadline would decide without the decide
    permission, and a changed schema would let the reviewer's data past the agent's own.
    Decided approvals are the audit trail, so they stay too. Decide on the record page
    itself, in the queue or on the run page: all three post to the decide view.
    """

    list_display = ("id", "title", "run", "status_column", "created_at", "expires_at", "decided_by")
    list_filter = ("status",)
    search_fields = ("=run__id", "title", "tool")
    list_select_related = ("run", "decided_by")
    change_list_template = "admin/agentflow/approval/change_list.html"
    # The record page holds the decide form (approval_form.html, posting to the decide view).
    change_form_template = "admin/agentflow/approval/change_form.html"
    exclude = ("sealed_data", "step", "binding")
    readonly_fields = ("decide_here",)

    def get_urls(self) -> list[URLPattern]:
        return [*self.console_urls(), *super().get_urls()]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        """The record page, with the question as the reviewer sees it and its decide form."""
        approval = self.get_object(request, object_id)
        if approval is not None and self.has_view_permission(request, approval):
            extra_context = {
                **(extra_context or {}),
                "review": review_form(approval),
                "may_decide": request.user.has_perm(permissions.DECIDE),
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # First, and once: the admin lists read-only fields again after the model's.
        return list(dict.fromkeys(["decide_here", *super().get_fields(request, obj)]))

    @admin.display(description="status", ordering="status")
    def status_column(self, approval: Approval) -> str:
        return status_badge(approval.status)

    @admin.display(description="decide")
    def decide_here(self, approval: Approval) -> str:
        if approval.is_decided:
            return f"{approval.status}"
        url = reverse("admin:agentflow_run_change", args=[approval.run_id])
        return format_html(
            'In the panel above, or <a href="{}#approval-{}">Decide on the run page</a>',
            url,
            approval.id,
        )

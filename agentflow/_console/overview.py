"""The overview page, mixed into ``RunAdmin``: what the runs of a period did, as pictures.

Runs over time by status, the failure rate, p50/p95 run and step durations, spend and
tokens per day against budgets, and pending approvals by age; for the whole site or one
agent, over the last 24 hours, 7 days or 30 days. Only runs the user may view count
(``agentflow.view_run`` and ``AGENTFLOW["RUN_VIEW_RULE"]``), and every figure links to
the admin list of the runs or approvals behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_safe

from agentflow import permissions
from agentflow._console import figures
from agentflow._console.csp import csp
from agentflow.models import Run

AGENTS_SHOWN = 50  # agents offered as filters, in alphabetical order
VIEW_BUDGET = "agentflow.view_budget"


class RunOverviewMixin:
    """The overview URL and view."""

    admin_site: Any
    model: type[Run]

    def lookup_allowed(self, lookup: str, value: Any, request: Any = None) -> bool:
        """The runs list also filters by when their steps started: the step figures' links."""
        if lookup in (figures.STEPS_FROM, figures.STEPS_UNTIL):
            return True
        return super().lookup_allowed(lookup, value, request)  # type: ignore[misc]

    def overview_urls(self) -> list[URLPattern]:
        wrap: Callable[..., Any] = self.admin_site.admin_view
        return [path("overview/", wrap(self.overview_view), name="agentflow_run_overview")]

    @method_decorator(require_safe)
    @csp
    def overview_view(self, request: HttpRequest) -> HttpResponse:
        """The figures of the chosen period (``?period=``) and agent (``?agent=``)."""
        if not self.has_view_permission(request):  # type: ignore[attr-defined]
            raise PermissionDenied
        period = figures.PERIODS.get(request.GET.get("period", ""), None)
        period = period or figures.PERIODS[figures.DEFAULT_PERIOD]
        agent = request.GET.get("agent", "").strip()[:200]
        runs = permissions.visible_runs(request.user, Run.objects.all())
        agents = list(
            runs.order_by()
            .values_list("agent", flat=True)
            .distinct()
            .order_by("agent")[:AGENTS_SHOWN]
        )
        overview = figures.build(
            runs,
            period,
            agent,
            timezone.now(),
            site=self.admin_site.name,
            show_budgets=request.user.has_perm(VIEW_BUDGET),
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Overview of {agent}" if agent else "Overview",
            "overview": overview,
            "periods": figures.PERIODS.values(),
            "agents": agents,
            "agent": agent,
            "statuses": figures.STATUSES,
        }
        return TemplateResponse(request, "admin/agentflow/run/overview.html", context)


class ApprovalAgentLookupMixin:
    """Let the approvals list filter by the run's agent (``run__agent__exact``).

    The overview's pending-approvals figure of one agent links there; Django's admin
    refuses lookups across a relation that no list filter names.
    """

    def lookup_allowed(self, lookup: str, value: Any, request: Any = None) -> bool:
        if lookup == "run__agent__exact":
            return True
        return super().lookup_allowed(lookup, value, request)  # type: ignore[misc]

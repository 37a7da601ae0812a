"""The pending-approvals queue, mixed into ``ApprovalAdmin``: oldest question first.

Its Approve and Reject buttons post to the decide view (``agentflow:decide``), the one
place a decision is checked and recorded; this page only shows the questions, and those
decided in the last minutes (so that a live page can say who decided what it shows).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_safe

from agentflow import permissions
from agentflow._console.approval_form import review_form
from agentflow._console.csp import csp
from agentflow._console.live import list_live, recently_decided
from agentflow.models import Approval, Run

PER_PAGE = 50


class ApprovalQueueMixin:
    """The ``queue/`` URL of the approval admin."""

    admin_site: Any
    model: type[Approval]

    def console_urls(self) -> list[URLPattern]:
        return [
            path(
                "queue/",
                self.admin_site.admin_view(self.queue_view),
                name="agentflow_approval_queue",
            )
        ]

    @method_decorator(require_safe)
    @csp
    def queue_view(self, request: HttpRequest) -> HttpResponse:
        """Pending approvals, oldest first, 50 a page, each with its decision form."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        pending = (
            Approval.objects.filter(
                status=Approval.Status.PENDING,
                run__in=permissions.visible_runs(request.user, Run.objects.all()),
            )
            .select_related("run")
            .order_by("created_at", "id")
        )
        page = Paginator(pending, PER_PAGE).get_page(request.GET.get("page"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Pending approvals",
            "page": page,
            # A site's run rule may hide some runs; their questions are not listed here.
            "forms": [review_form(a) for a in page.object_list],
            "may_decide": request.user.has_perm(permissions.DECIDE),
            "decided": recently_decided(request.user),
            "live": list_live("approvals"),
        }
        return TemplateResponse(request, "admin/agentflow/approval/queue.html", context)

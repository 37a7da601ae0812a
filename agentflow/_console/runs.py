"""The run page and its actions, mixed into ``RunAdmin``.

Every view goes through ``admin_site.admin_view`` (staff login, CSRF on POST, no cache),
checks its own permission on the server, and calls the public API with ``by=`` the
operator, so the run's events say who acted; each action is also a ``LogEntry``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from uuid import UUID

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.http import require_POST, require_safe

import agentflow
from agentflow import permissions
from agentflow._console import pauses, timeline, waterfall
from agentflow._console.approval_form import review_form
from agentflow._console.csp import csp
from agentflow._engine.serialize import shortened
from agentflow.exceptions import AgentflowError
from agentflow.models import Run, Step

CANCEL = "agentflow.cancel_run"
RESUME = "agentflow.resume_run"
FORK = "agentflow.fork_run"
# The children filter: "running" stands for every status of a child not yet finished
# nor waiting (pending, scheduled, running).
CHILD_STATUSES = (
    Step.Status.SUCCEEDED,
    Step.Status.RUNNING,
    Step.Status.WAITING,
    Step.Status.FAILED,
)
# A fork position as the form sends it: ASCII digits, few enough for any run.
POSITION = re.compile(r"[0-9]{1,18}")


class RunConsoleMixin:
    """URLs and views of the run page, its fan-out children, actions and compare."""

    admin_site: Any
    model: type[Run]

    def console_urls(self) -> list[URLPattern]:
        wrap: Callable[..., Any] = self.admin_site.admin_view
        return [
            path("compare/", wrap(self.compare_view), name="agentflow_run_compare"),
            path(
                "<uuid:run_id>/steps/<int:position>/children/",
                wrap(self.children_view),
                name="agentflow_run_children",
            ),
            path("<uuid:run_id>/cancel/", wrap(self.cancel_view), name="agentflow_run_cancel"),
            path("<uuid:run_id>/resume/", wrap(self.resume_view), name="agentflow_run_resume"),
            path("<uuid:run_id>/fork/", wrap(self.fork_view), name="agentflow_run_fork"),
        ]

    # -- reading --------------------------------------------------------------------

    def viewable_run(self, request: HttpRequest, run_id: Any) -> Run:
        """The run, if the user may see it: 404 for no run, 403 for no permission."""
        try:
            run = (
                Run.objects.select_related("owner", "parent", "schedule")
                .filter(id=UUID(str(run_id)))
                .first()
            )
        except ValueError:
            run = None
        if run is None:
            raise Http404(f"There is no run {run_id}.")
        if not (self.has_view_permission(request, run) and permissions.may_view(request.user, run)):
            raise PermissionDenied
        return run

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        """The run page replaces the change form; runs are never edited as rows."""
        if request.method not in ("GET", "HEAD"):
            raise PermissionDenied
        return self.run_view(request, object_id)

    @csp
    def run_view(self, request: HttpRequest, run_id: Any) -> HttpResponse:
        """The live timeline, the approval panel, waits, internals and actions of one run."""
        run = self.viewable_run(request, run_id)
        page, rows = timeline.steps_page(run, request.GET.get("page"))
        approvals = timeline.pending_approvals(run)
        user = request.user
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Run {run.id}",
            "subtitle": run.agent,
            "run": run,
            "page": page,
            "rows": rows,
            "approvals": [review_form(a) for a in approvals[: timeline.APPROVALS_SHOWN]],
            "more_approvals": len(approvals) > timeline.APPROVALS_SHOWN,
            "may_decide": user.has_perm(permissions.DECIDE),
            "waits": timeline.waits(run, approvals),
            "forks": timeline.forks(run),
            "person_wait": timeline.person_wait(run),
            "waterfall": waterfall.build(run, {r.step.position for r in rows}),
            "may_cancel": user.has_perm(CANCEL),
            "may_resume": user.has_perm(RESUME),
            "may_fork": user.has_perm(FORK),
            "cancellable": (*Run.ACTIVE, Run.Status.PAUSED),
            "resumable": (Run.Status.PAUSED, Run.Status.FAILED),
            "live": {
                "run": str(run.id),
                "after": run.event_seq,
                "socket": f"/ws/agentflow/runs/{run.id}/",
            },
        }
        return TemplateResponse(request, "admin/agentflow/run/page.html", context)

    @method_decorator(require_safe)
    @csp
    def children_view(self, request: HttpRequest, run_id: UUID, position: int) -> HttpResponse:
        """A fan-out's children, 50 a page, filtered by status."""
        run = self.viewable_run(request, run_id)
        parent = Step.objects.filter(run=run, position=position, index__isnull=True).first()
        if parent is None:
            raise Http404(f"Run {run.id} has no step at position {position}.")
        status = request.GET.get("status", "")
        if status not in ("", *CHILD_STATUSES):
            status = ""
        page, rows, counts = timeline.children_page(run, position, status, request.GET.get("page"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Fan-out at position {position} of run {run.id}",
            "run": run,
            "parent": parent,
            "page": page,
            "rows": rows,
            "counts": counts,
            "status": status,
            "statuses": CHILD_STATUSES,
            "live": {
                "run": str(run.id),
                "after": run.event_seq,
                "socket": f"/ws/agentflow/runs/{run.id}/",
            },
        }
        return TemplateResponse(request, "admin/agentflow/run/children.html", context)

    @method_decorator(require_safe)
    @csp
    def compare_view(self, request: HttpRequest) -> HttpResponse:
        """Two runs side by side, step by step: a fork against its parent by default."""
        b = self.viewable_run(request, request.GET.get("b", ""))
        a_id = request.GET.get("a") or (b.parent_id and str(b.parent_id))
        if not a_id:
            messages.error(request, f"Run {b.id} has no parent; choose a run to compare with.")
            return HttpResponseRedirect(self.run_url(b))
        a = self.viewable_run(request, a_id)
        try:
            comparison = agentflow.compare(a, b)
        except AgentflowError as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(self.run_url(b))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Compare runs",
            "a": a,
            "b": b,
            "comparison": comparison,
        }
        return TemplateResponse(request, "admin/agentflow/run/compare.html", context)

    # -- actions --------------------------------------------------------------------

    def _act(
        self,
        request: HttpRequest,
        run_id: UUID,
        perm: str,
        act: Callable[[Run], tuple[Run, str]],
    ) -> HttpResponse:
        run = self.viewable_run(request, run_id)
        if not request.user.has_perm(perm):
            raise PermissionDenied
        try:
            target, message = act(run)
        except AgentflowError as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(self.run_url(run))
        self.log_change(request, run, message)
        messages.success(request, message)
        return HttpResponseRedirect(self.run_url(target))

    @method_decorator(require_POST)
    @csp
    def cancel_view(self, request: HttpRequest, run_id: UUID) -> HttpResponse:
        """Cancel the run (POST with ``confirm=yes``, ``agentflow.cancel_run``).

        Without ``confirm`` (a browser without script, or another form), nothing is
        cancelled: a confirmation page asks first and posts again, with its CSRF token.
        """
        if request.POST.get("confirm") != "yes":
            run = self.viewable_run(request, run_id)
            if not request.user.has_perm(CANCEL):
                raise PermissionDenied
            context = {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": f"Cancel run {run.id}?",
                "run": run,
                "cancellable": run.status in (*Run.ACTIVE, Run.Status.PAUSED),
            }
            return TemplateResponse(request, "admin/agentflow/run/cancel.html", context)

        def cancel(run: Run) -> tuple[Run, str]:
            return agentflow.cancel(run, by=request.user), "Cancelled the run."

        return self._act(request, run_id, CANCEL, cancel)

    @method_decorator(require_POST)
    def resume_view(self, request: HttpRequest, run_id: UUID) -> HttpResponse:
        """Resume a paused run, or retry a failed one from its failed step, and say which.

        A paused run whose budget or policy limit still stops it is left alone: the
        message names the limit and links to it, to be raised first.
        """
        run = self.viewable_run(request, run_id)
        if not request.user.has_perm(RESUME):
            raise PermissionDenied
        if run.status == Run.Status.PAUSED:
            blocker = pauses.still_blocked(run)
            if blocker is not None:
                messages.warning(request, self.still_paused(blocker))
                return HttpResponseRedirect(self.run_url(run))

        def resume(run: Run) -> tuple[Run, str]:
            if run.status == Run.Status.FAILED:
                position = (run.error or {}).get("position")
                step = Step.objects.filter(
                    run=run, position=position if isinstance(position, int) else -1, index=None
                ).first()
                resumed = agentflow.resume(run, by=request.user)
                where = (
                    f"its failed step, {step.kind} {step.name} at position {step.position}"
                    if step is not None and step.status == Step.Status.FAILED
                    else "where it failed (its agent code runs again)"
                )
                return resumed, f"Retried the failed run from {where}; it is now {resumed.status}."
            resumed = agentflow.resume(run, by=request.user)
            return resumed, (
                f"Resumed the run; it is now {resumed.status}, and a worker continues it "
                "from where it paused."
            )

        return self._act(request, run_id, RESUME, resume)

    def still_paused(self, blocker: pauses.Blocker) -> str:
        """The message for a resume that did nothing: which limit, and a link to raise it."""
        row = blocker.row
        url = reverse(f"{self.admin_site.name}:agentflow_{blocker.kind}_change", args=[row.pk])
        return format_html(
            'Did not resume: the run is still paused because {} <a href="{}" '
            'data-testid="raise-limit">{}</a> still stops it ({}). Raise its limit (or '
            "disable it), then resume.",
            blocker.kind,
            url,
            row.name,
            blocker.detail,
        )

    @method_decorator(require_POST)
    def fork_view(self, request: HttpRequest, run_id: UUID) -> HttpResponse:
        """Fork the run at a position into a new run and open it."""

        def fork(run: Run) -> tuple[Run, str]:
            text = request.POST.get("position", "").strip()
            # ASCII digits only: str.isdigit() takes '²', which int() refuses, and more
            # digits than any run has positions could exceed what int() converts.
            if POSITION.fullmatch(text) is None:
                raise agentflow.InvalidInput(
                    "Fork from which position? Give a whole number from 0 to the run's number "
                    f"of recorded positions, not {shortened(repr(text))}."
                )
            new = agentflow.fork(run, at=int(text), by=request.user)
            self.log_addition(request, new, f"Forked from run {run.id} at position {text}.")
            return new, f"Forked the run at position {text} into run {new.id}."

        return self._act(request, run_id, FORK, fork)

    def run_url(self, run: Run) -> str:
        return reverse(f"{self.admin_site.name}:agentflow_run_change", args=[run.id])

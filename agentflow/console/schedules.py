"""Schedules of recurring agents in the admin, mixed into ``RunAdmin``.

A schedule is a django-celery-beat ``PeriodicTask`` that ``agentflow.schedule`` wrote;
beat's own admin edits and deletes them. These pages list them with their recent runs
and create new ones through ``agentflow.schedule``, so the form gets the API's checks.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_http_methods, require_safe
from django_celery_beat.models import PeriodicTask

import agentflow
from agentflow import registry
from agentflow.console.csp import csp
from agentflow.exceptions import AgentflowError
from agentflow.models import Run

VIEW = "django_celery_beat.view_periodictask"
ADD = "django_celery_beat.add_periodictask"
SCHEDULES_PER_PAGE = 20
RECENT_RUNS = 10
RUNS_PER_PAGE = 50


class ScheduleForm(forms.Form):
    """What ``agentflow.schedule`` takes, as an admin form."""

    agent = forms.ChoiceField(choices=())
    input = forms.JSONField(
        required=False, initial=dict, help_text="a JSON object of the agent's arguments"
    )
    every = forms.IntegerField(required=False, min_value=1, help_text="seconds between runs")
    crontab = forms.CharField(
        required=False,
        max_length=200,
        help_text="or a 5-field crontab, 'minute hour day-of-month month day-of-week', "
        "e.g. '0 9 * * 1-5'",
    )
    name = forms.CharField(required=False, max_length=200, help_text="blank: a name is made")
    owner = forms.CharField(
        required=False, max_length=150, help_text="the username that owns the runs; blank: none"
    )
    budget = forms.JSONField(
        required=False, help_text='the runs\' own limits, e.g. {"max_cost": "1.00"}'
    )
    enabled = forms.BooleanField(required=False, initial=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = sorted({definition.name for definition in registry.agents()})
        self.fields["agent"].choices = [(name, name) for name in names]

    def clean_input(self) -> dict[str, Any]:
        value = self.cleaned_data.get("input")
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError(
                'The input must be a JSON object, e.g. {"period": "2026-01"}.'
            )
        return value

    def clean_owner(self) -> Any:
        username = self.cleaned_data.get("owner", "").strip()
        if not username:
            return None
        user_model = get_user_model()
        user = user_model.objects.filter(**{user_model.USERNAME_FIELD: username}).first()
        if user is None:
            raise forms.ValidationError(f"There is no user {username!r}.")
        return user

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if (data.get("every") is None) == (not data.get("crontab")):
            raise forms.ValidationError("Give either every (seconds) or a crontab, not both.")
        return data

    def save(self) -> PeriodicTask:
        """Write the schedule; raises ``AgentflowError`` for what the API refuses."""
        data = self.cleaned_data
        return agentflow.schedule(
            data["agent"],
            data["input"],
            every=data.get("every"),
            crontab=data.get("crontab") or None,
            name=data.get("name") or None,
            owner=data.get("owner"),
            budget=data.get("budget") or None,
            enabled=data.get("enabled", False),
        )


def agent_of(task: PeriodicTask) -> str:
    """The agent a schedule starts, read from its task kwargs."""
    try:
        return str(json.loads(task.kwargs or "{}").get("agent", ""))
    except (ValueError, AttributeError):
        return ""


class ScheduleConsoleMixin:
    """The ``schedules/`` URLs of the run admin."""

    admin_site: Any
    model: type[Run]

    def schedule_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("schedules/", wrap(self.schedules_view), name="agentflow_run_schedules"),
            path("schedules/add/", wrap(self.schedule_add_view), name="agentflow_run_schedule_add"),
            path(
                "schedules/<int:task_id>/",
                wrap(self.schedule_view),
                name="agentflow_run_schedule",
            ),
        ]

    def _check(self, request: HttpRequest, perm: str) -> None:
        if not (self.has_view_permission(request) and request.user.has_perm(perm)):
            raise PermissionDenied

    def _context(self, request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "may_add": request.user.has_perm(ADD),
            "beat_admin": PeriodicTask in self.admin_site._registry,
            **extra,
        }

    @method_decorator(require_safe)
    @csp
    def schedules_view(self, request: HttpRequest) -> HttpResponse:
        """Every agentflow schedule with its last runs."""
        from agentflow import schedules

        self._check(request, VIEW)
        tasks = (
            PeriodicTask.objects.filter(task=schedules.TASK)
            .select_related("interval", "crontab")
            .order_by("name")
        )
        page = Paginator(tasks, SCHEDULES_PER_PAGE).get_page(request.GET.get("page"))
        rows = [
            (task, agent_of(task), list(schedules.runs_of(task)[:RECENT_RUNS]))
            for task in page.object_list
        ]
        context = self._context(request, "Schedules", page=page, rows=rows)
        return TemplateResponse(request, "admin/agentflow/schedule/list.html", context)

    @method_decorator(require_safe)
    @csp
    def schedule_view(self, request: HttpRequest, task_id: int) -> HttpResponse:
        """One schedule and its runs, newest first, 50 a page."""
        from agentflow import schedules

        self._check(request, VIEW)
        task = get_object_or_404(
            PeriodicTask.objects.select_related("interval", "crontab"),
            id=task_id,
            task=schedules.TASK,
        )
        page = Paginator(schedules.runs_of(task), RUNS_PER_PAGE).get_page(request.GET.get("page"))
        context = self._context(
            request, f"Schedule {task.name}", task=task, agent=agent_of(task), page=page
        )
        return TemplateResponse(request, "admin/agentflow/schedule/detail.html", context)

    @method_decorator(require_http_methods(["GET", "HEAD", "POST"]))
    @csp
    def schedule_add_view(self, request: HttpRequest) -> HttpResponse:
        """Create a schedule with ``agentflow.schedule``."""
        self._check(request, ADD)
        form = ScheduleForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                task = form.save()
            except AgentflowError as exc:
                form.add_error(None, str(exc))
            else:
                self.log_addition(request, task, f"Scheduled agent {agent_of(task)}.")
                messages.success(request, f"Scheduled {task.name}.")
                return HttpResponseRedirect(
                    reverse(f"{self.admin_site.name}:agentflow_run_schedule", args=[task.id])
                )
        context = self._context(request, "Schedule an agent", form=form)
        return TemplateResponse(request, "admin/agentflow/schedule/add.html", context)

"""Schedules of recurring agents in the admin, mixed into ``RunAdmin``.

A schedule is a django-celery-beat ``PeriodicTask`` that ``agentflow.schedule`` wrote.
These pages list them with their timing in words and their recent runs ("last fired" is
the newest run a schedule started), create new ones through ``agentflow.schedule`` so the
form gets the API's checks, and enable, disable, delete (after a confirmation) or run one
now. ``ScheduleAdmin`` puts "Schedules" in the admin index and sends its links here.

A permission on schedules is either agentflow's (``agentflow.view_schedule``, on the
``Schedule`` proxy model) or beat's (``django_celery_beat.view_periodictask``).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Max
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_http_methods, require_POST, require_safe
from django_celery_beat.models import PeriodicTask

import agentflow
from agentflow import _registry as registry
from agentflow import permissions
from agentflow._console.csp import csp
from agentflow._console.timing import describe
from agentflow.exceptions import AgentflowError
from agentflow.models import Run, Schedule

VIEW, ADD, CHANGE, DELETE = "view", "add", "change", "delete"
SCHEDULES_PER_PAGE = 20
RECENT_RUNS = 10
RUNS_PER_PAGE = 50


def may(user: Any, action: str) -> bool:
    """Whether ``user`` may view, add, change or delete schedules (agentflow's or beat's perm)."""
    wanted = (action, CHANGE) if action == VIEW else (action,)
    return any(
        user.has_perm(f"agentflow.{one}_schedule")
        or user.has_perm(f"django_celery_beat.{one}_periodictask")
        for one in wanted
    )


class OptionalJSONField(forms.JSONField):
    """A JSON field that shows nothing, not ``null``, when it holds no value."""

    default_error_messages = {
        "invalid": 'This is not valid JSON: write an object like {"key": "value"}, '
        "with double quotes around keys and strings, or leave it blank.",
    }

    def prepare_value(self, value: Any) -> Any:
        return "" if value is None else super().prepare_value(value)


class ScheduleForm(forms.Form):
    """What ``agentflow.schedule`` takes, as an admin form."""

    agent = forms.ChoiceField(
        choices=(),
        error_messages={
            "required": "Choose the agent to run.",
            "invalid_choice": "There is no agent %(value)s here; choose one from the list.",
        },
    )
    input = OptionalJSONField(
        required=False, initial=dict, help_text="a JSON object of the agent's arguments"
    )
    every = forms.IntegerField(
        required=False,
        min_value=1,
        help_text="seconds between runs",
        error_messages={
            "invalid": "Give the seconds between runs as a whole number, e.g. 3600.",
            "min_value": "Give at least 1 second between runs, e.g. 60.",
        },
    )
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
    budget = OptionalJSONField(
        required=False, help_text='the runs\' own limits, e.g. {"max_cost": "1.00"}; blank: none'
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
                "The input must be a JSON object of the agent's arguments, e.g. "
                '{"period": "2026-01"}; write {} for an agent that takes none.'
            )
        return value

    def clean_budget(self) -> dict[str, Any] | None:
        value = self.cleaned_data.get("budget")
        if value in (None, "", {}):
            return None
        if not isinstance(value, dict):
            raise forms.ValidationError(
                'The budget must be a JSON object of limits, e.g. {"max_cost": "1.00", '
                '"max_steps": 100}; leave it blank for no budget of its own.'
            )
        return value

    def clean_owner(self) -> Any:
        username = self.cleaned_data.get("owner", "").strip()
        if not username:
            return None
        user_model = get_user_model()
        user = user_model.objects.filter(**{user_model.USERNAME_FIELD: username}).first()
        if user is None:
            raise forms.ValidationError(
                f"There is no user {username!r}: give an existing username, or leave it blank."
            )
        return user

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if "every" not in data:
            return data  # every has its own error already
        if data.get("every") is not None and data.get("crontab"):
            raise forms.ValidationError("Fill in every or crontab, not both: clear one of them.")
        if data.get("every") is None and not data.get("crontab"):
            raise forms.ValidationError(
                "Say when to run it: fill in every (seconds between runs, e.g. 3600) or "
                "crontab (e.g. '0 9 * * 1-5' for 09:00 on weekdays)."
            )
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
            budget=data.get("budget"),
            enabled=data.get("enabled", False),
        )


def agent_of(task: PeriodicTask) -> str:
    """The agent a schedule starts, read from its task kwargs."""
    try:
        return str(json.loads(task.kwargs or "{}").get("agent", ""))
    except (ValueError, AttributeError):
        return ""


def with_last_fired(tasks: Any) -> Any:
    """Schedules annotated with ``last_fired``: when the newest of their runs was created."""
    return tasks.annotate(last_fired=Max("agentflow_runs__created_at"))


class ScheduleConsoleMixin:
    """The ``schedules/`` URLs of the run admin."""

    admin_site: Any
    model: type[Run]

    def schedule_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        one = "schedules/<int:task_id>/"
        return [
            path("schedules/", wrap(self.schedules_view), name="agentflow_run_schedules"),
            path("schedules/add/", wrap(self.schedule_add_view), name="agentflow_run_schedule_add"),
            path(one, wrap(self.schedule_view), name="agentflow_run_schedule"),
            path(
                f"{one}enable/",
                wrap(self.schedule_enable_view),
                name="agentflow_run_schedule_enable",
            ),
            path(
                f"{one}disable/",
                wrap(self.schedule_disable_view),
                name="agentflow_run_schedule_disable",
            ),
            path(f"{one}run/", wrap(self.schedule_run_view), name="agentflow_run_schedule_run"),
            path(
                f"{one}delete/",
                wrap(self.schedule_delete_view),
                name="agentflow_run_schedule_delete",
            ),
        ]

    def _check(self, request: HttpRequest, action: str) -> None:
        if not (self.has_view_permission(request) and may(request.user, action)):
            raise PermissionDenied

    def _task(self, task_id: int) -> Schedule:
        return get_object_or_404(Schedule.objects.select_related("interval", "crontab"), id=task_id)

    def _schedule_url(self, task: PeriodicTask) -> str:
        return reverse(f"{self.admin_site.name}:agentflow_run_schedule", args=[task.id])

    def _context(self, request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
        user = request.user
        return {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "may_add": may(user, ADD),
            "may_change": may(user, CHANGE),
            "may_delete": may(user, DELETE),
            "may_start": user.has_perm(permissions.START),
            "beat_admin": self.admin_site.is_registered(PeriodicTask),
            **extra,
        }

    @method_decorator(require_safe)
    @csp
    def schedules_view(self, request: HttpRequest) -> HttpResponse:
        """Every agentflow schedule with its timing in words and its last runs."""
        from agentflow import schedules

        self._check(request, VIEW)
        tasks = with_last_fired(Schedule.objects.select_related("interval", "crontab")).order_by(
            "name"
        )
        page = Paginator(tasks, SCHEDULES_PER_PAGE).get_page(request.GET.get("page"))
        rows = [
            (task, agent_of(task), describe(task), list(schedules.runs_of(task)[:RECENT_RUNS]))
            for task in page.object_list
        ]
        context = self._context(request, "Schedules", page=page, rows=rows)
        return TemplateResponse(request, "admin/agentflow/schedule/list.html", context)

    @method_decorator(require_safe)
    @csp
    def schedule_view(self, request: HttpRequest, task_id: int) -> HttpResponse:
        """One schedule, its actions, and its runs, newest first, 50 a page."""
        from agentflow import schedules

        self._check(request, VIEW)
        task = get_object_or_404(
            with_last_fired(Schedule.objects.select_related("interval", "crontab")), id=task_id
        )
        page = Paginator(schedules.runs_of(task), RUNS_PER_PAGE).get_page(request.GET.get("page"))
        context = self._context(
            request,
            f"Schedule {task.name}",
            task=task,
            agent=agent_of(task),
            when=describe(task),
            page=page,
            run_key=uuid.uuid4(),
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
                return HttpResponseRedirect(self._schedule_url(task))
        context = self._context(request, "Schedule an agent", form=form)
        return TemplateResponse(request, "admin/agentflow/schedule/add.html", context)

    @method_decorator(require_POST)
    def schedule_enable_view(self, request: HttpRequest, task_id: int) -> HttpResponse:
        """Turn the schedule on: beat fires it again from its next tick."""
        return self._set_enabled(request, task_id, enabled=True)

    @method_decorator(require_POST)
    def schedule_disable_view(self, request: HttpRequest, task_id: int) -> HttpResponse:
        """Turn the schedule off: beat stops firing it; its runs are not touched."""
        return self._set_enabled(request, task_id, enabled=False)

    def _set_enabled(self, request: HttpRequest, task_id: int, *, enabled: bool) -> HttpResponse:
        self._check(request, CHANGE)
        task = self._task(task_id)
        if task.enabled == enabled:
            messages.info(request, f"{task.name} is already {'on' if enabled else 'off'}.")
            return HttpResponseRedirect(self._schedule_url(task))
        task.enabled = enabled
        task.save()  # beat's post_save signal tells a running beat to reload its rows
        message = (
            f"Enabled {task.name}: it fires again {describe(task)}."
            if enabled
            else f"Disabled {task.name}: it starts no run until it is enabled again."
        )
        self.log_change(request, task, message)
        messages.success(request, message)
        return HttpResponseRedirect(self._schedule_url(task))

    @method_decorator(require_POST)
    def schedule_run_view(self, request: HttpRequest, task_id: int) -> HttpResponse:
        """Start a run of the schedule's agent with its input now, linked to the schedule."""
        from agentflow import schedules

        self._check(request, VIEW)
        if not request.user.has_perm(permissions.START):
            raise PermissionDenied
        task = self._task(task_id)
        key = request.POST.get("key", "")
        try:
            key = str(uuid.UUID(key))
        except ValueError:
            key = None  # a form from elsewhere: no protection against a double click
        try:
            run = schedules.start_now(task, key=key)
        except AgentflowError as exc:
            messages.error(request, f"{task.name} could not start a run: {exc}")
            return HttpResponseRedirect(self._schedule_url(task))
        message = f"Started run {run.id} of {task.name} now, outside its timing."
        self.log_addition(request, run, message)
        messages.success(request, message)
        return HttpResponseRedirect(
            reverse(f"{self.admin_site.name}:agentflow_run_change", args=[run.id])
        )

    @method_decorator(require_POST)
    @csp
    def schedule_delete_view(self, request: HttpRequest, task_id: int) -> HttpResponse:
        """Delete the schedule once confirmed; a POST without ``confirm`` asks first."""
        from agentflow import schedules

        self._check(request, DELETE)
        task = self._task(task_id)
        runs = schedules.runs_of(task).count()
        if request.POST.get("confirm") != "yes":
            context = self._context(
                request, f"Delete schedule {task.name}?", task=task, when=describe(task), runs=runs
            )
            return TemplateResponse(request, "admin/agentflow/schedule/delete.html", context)
        name = task.name
        self.log_deletions(request, PeriodicTask.objects.filter(pk=task.pk))
        task.delete()
        messages.success(
            request, f"Deleted {name}. Its {runs} run(s) are kept; they no longer name it."
        )
        return HttpResponseRedirect(reverse(f"{self.admin_site.name}:agentflow_run_schedules"))


class ScheduleAdmin(admin.ModelAdmin):
    """Puts "Schedules" in the admin index; its list, add and change links open the console.

    The console's schedule pages show runs too, so each permission here also needs
    ``agentflow.view_run``: the index offers no link that would answer 403.
    """

    def _may(self, request: HttpRequest, action: str) -> bool:
        return request.user.has_perm(permissions.VIEW) and may(request.user, action)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may(request, VIEW)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._may(request, ADD)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may(request, CHANGE)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may(request, DELETE)

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path(
                "", wrap(self.go("agentflow_run_schedules")), name="agentflow_schedule_changelist"
            ),
            path(
                "add/", wrap(self.go("agentflow_run_schedule_add")), name="agentflow_schedule_add"
            ),
            path(
                "<path:object_id>/change/",
                wrap(self.go("agentflow_run_schedule")),
                name="agentflow_schedule_change",
            ),
            path("<path:object_id>/", wrap(self.go("agentflow_run_schedule"))),
        ]

    def go(self, name: str) -> Any:
        """A view that redirects to the console's schedule page ``name``."""

        def redirect(request: HttpRequest, object_id: str | None = None) -> HttpResponse:
            if not self.has_view_permission(request):
                raise PermissionDenied
            args = []
            if object_id is not None:
                if not object_id.isascii() or not object_id.isdigit():
                    raise Http404(f"There is no schedule {object_id}.")
                args = [int(object_id)]
            return HttpResponseRedirect(reverse(f"{self.admin_site.name}:{name}", args=args))

        return redirect

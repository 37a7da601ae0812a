"""Every POST of the console and the admin refuses a request without its CSRF token.

A staff user who holds every permission the actions need posts each one twice, with a client
that checks CSRF tokens as the middleware does for a browser: without the token the answer
is a 403 and nothing changes (no run, event, decision, audit entry or row); with the token
the console's forms send, the action happens.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django_celery_beat.models import PeriodicTask

import agentflow
from agentflow._engine import executor
from agentflow.models import Approval, Budget, Event, Policy, Run

pytestmark = pytest.mark.django_db

PERMISSIONS = (
    "view_run", "cancel_run", "resume_run", "fork_run", "decide_approval", "view_approval",
    "add_budget", "view_budget", "add_policy", "view_policy", "add_periodictask",
    "start_run", "change_periodictask", "delete_periodictask",
)  # fmt: skip


@dataclass
class Action:
    """A POST: its URL and form for a fresh run, and what shows that it happened."""

    url: Callable[[Run], str]
    data: dict[str, str]
    done: Callable[[Run], bool]
    run: Callable[[], Run] = lambda: _run()


def _run(status: str = Run.Status.SUCCEEDED, **fields: Any) -> Run:
    """A run of ``tests.mixed`` that really ran (one step per position), set to ``status``."""
    run = agentflow.start("tests.mixed", {"n": 2})
    while executor.advance(run.id, worker="test") not in ("succeeded", "failed"):
        pass
    Run.objects.filter(id=run.id).update(status=status, **fields)
    return Run.objects.get(id=run.id)


def _asking() -> Run:
    run = agentflow.start("tests.asker", {})
    assert executor.advance(run.id, worker="test") == "waiting"
    return run


def _admin(name: str, *args: Any) -> str:
    return reverse(f"admin:agentflow_{name}", args=args)


def _decide(run: Run) -> str:
    return reverse("agentflow:decide", args=[Approval.objects.get(run=run).id])


def _scheduled(*, enabled: bool) -> Run:
    agentflow.schedule("tests.mixed", {"n": 1}, every=60, name="csrf", enabled=enabled)
    return _run()


def _schedule() -> PeriodicTask:
    return PeriodicTask.objects.get(name="csrf")


def _status(run: Run) -> str:
    return Run.objects.get(id=run.id).status


def _decided(run: Run) -> str:
    return Approval.objects.get(run=run).status


ACTIONS = {
    "cancel": Action(
        url=lambda run: _admin("run_cancel", run.id),
        data={"confirm": "yes"},
        run=lambda: _run(Run.Status.PAUSED, finished_at=None),
        done=lambda run: _status(run) == Run.Status.CANCELLED,
    ),
    "resume": Action(
        url=lambda run: _admin("run_resume", run.id),
        data={},
        run=lambda: _run(Run.Status.PAUSED, finished_at=None),
        done=lambda run: _status(run) == Run.Status.WAITING,
    ),
    "retry": Action(
        url=lambda run: _admin("run_resume", run.id),
        data={},
        run=lambda: _run(Run.Status.FAILED, error={"message": "the API was down"}),
        done=lambda run: _status(run) == Run.Status.WAITING,
    ),
    "fork": Action(
        url=lambda run: _admin("run_fork", run.id),
        data={"position": "1"},
        done=lambda run: Run.objects.filter(parent=run).exists(),
    ),
    "approve": Action(
        url=_decide,
        data={"decision": "approve", "data": '{"limit": 7}', "comment": "fine"},
        run=_asking,
        done=lambda run: _decided(run) == Approval.Status.APPROVED,
    ),
    "reject": Action(
        url=_decide,
        data={"decision": "reject", "comment": "no"},
        run=_asking,
        done=lambda run: _decided(run) == Approval.Status.REJECTED,
    ),
    "schedule": Action(
        url=lambda run: _admin("run_schedule_add"),
        data={"agent": "tests.mixed", "input": '{"n": 1}', "every": "60", "enabled": "on"},
        done=lambda run: PeriodicTask.objects.filter(task="agentflow.start_scheduled").exists(),
    ),
    "start": Action(
        url=lambda run: _admin("run_start"),
        data={"agent": "tests.mixed", "input-n": "3"},
        done=lambda run: Run.objects.filter(input={"n": 3}).exists(),
    ),
    "schedule_enable": Action(
        url=lambda run: _admin("run_schedule_enable", _schedule().id),
        data={},
        run=lambda: _scheduled(enabled=False),
        done=lambda run: _schedule().enabled,
    ),
    "schedule_disable": Action(
        url=lambda run: _admin("run_schedule_disable", _schedule().id),
        data={},
        run=lambda: _scheduled(enabled=True),
        done=lambda run: not _schedule().enabled,
    ),
    "schedule_delete": Action(
        url=lambda run: _admin("run_schedule_delete", _schedule().id),
        data={"confirm": "yes"},
        run=lambda: _scheduled(enabled=True),
        done=lambda run: not PeriodicTask.objects.filter(name="csrf").exists(),
    ),
    "schedule_run": Action(
        url=lambda run: _admin("run_schedule_run", _schedule().id),
        data={},
        run=lambda: _scheduled(enabled=True),
        done=lambda run: Run.objects.filter(schedule__name="csrf").exists(),
    ),
    "budget": Action(
        url=lambda run: _admin("budget_add"),
        data={"name": "csrf", "enabled": "on", "period": "total", "max_cost": "5"},
        done=lambda run: Budget.objects.filter(name="csrf").exists(),
    ),
    "policy": Action(
        url=lambda run: _admin("policy_add"),
        data={"name": "csrf", "enabled": "on", "effect": "deny", "tool": "tests.*"},
        done=lambda run: Policy.objects.filter(name="csrf").exists(),
    ),
}


def operator() -> Client:
    """A staff user's client that checks CSRF; the user holds every action's permission."""
    user = User.objects.create_user("operator", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=PERMISSIONS))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def token_from_page(client: Client, run: Run) -> str:
    """The token the console's forms carry, read from the run page."""
    page = client.get(_admin("run_change", run.id))
    assert page.status_code == 200
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())[1]


def state() -> tuple:
    """Everything an action could change."""
    return (
        sorted(Run.objects.values_list("id", "status")),
        Event.objects.count(),
        sorted(Approval.objects.values_list("id", "status", "comment")),
        LogEntry.objects.count(),
        PeriodicTask.objects.count(),
        Budget.objects.count(),
        Policy.objects.count(),
    )


@pytest.mark.parametrize("name", ACTIONS)
def test_each_post_action_needs_the_csrf_token(name, recording_dispatcher):
    action = ACTIONS[name]
    run = action.run()
    client = operator()
    url = action.url(run)
    before = state()

    refused = client.post(url, action.data)
    assert refused.status_code == 403, refused.content[:500]
    assert b"CSRF" in refused.content
    assert state() == before
    assert not action.done(run)

    token = token_from_page(client, run)
    accepted = client.post(url, {**action.data, "csrfmiddlewaretoken": token})
    assert accepted.status_code in (200, 302), accepted.content[:500]
    assert action.done(run)
    assert state() != before


def test_every_console_post_url_is_covered():
    """A new POST action of the console must join ACTIONS (the other views only read)."""
    from django.contrib import admin

    runs, approvals = admin.site._registry[Run], admin.site._registry[Approval]
    names = {p.name for p in [*runs.console_urls(), *runs.schedule_urls(), *runs.start_urls()]}
    names |= {p.name for p in approvals.console_urls()}
    reading = {"agentflow_run_compare", "agentflow_run_children", "agentflow_approval_queue",
               "agentflow_run_schedules", "agentflow_run_schedule"}  # fmt: skip
    posting = {"agentflow_run_cancel", "agentflow_run_resume", "agentflow_run_fork",
               "agentflow_run_schedule_add", "agentflow_run_start",
               "agentflow_run_schedule_enable", "agentflow_run_schedule_disable",
               "agentflow_run_schedule_delete", "agentflow_run_schedule_run"}  # fmt: skip
    assert names == reading | posting

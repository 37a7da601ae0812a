"""``AGENTFLOW["RUN_VIEW_RULE"]`` on every admin page: lists, detail pages, the queue.

A red-team probe found the run page answering 403 under an owner-only rule while the runs
list, step, event and approval lists and their detail pages showed another owner's runs,
tool output, events and approvals. Each page is asked here as two staff owners, under a
rule with a SQL form (``queryset``) and under one without (asked run by run).
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from agentflow.models import Approval, Event, Run, Signal, Step

pytestmark = pytest.mark.django_db

SECRET = "alice-only tool output"


def owner_only(user, run) -> bool:
    return user.is_superuser or run.owner_id == user.pk


def owner_only_queryset(user, runs):
    return runs if user.is_superuser else runs.filter(owner=user)


def owner_only_in_sql(user, run) -> bool:
    return owner_only(user, run)


owner_only_in_sql.queryset = owner_only_queryset


def staff(username: str) -> tuple[User, Client]:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="agentflow",
            codename__in=["view_run", "view_step", "view_event", "view_approval", "view_signal"],
        )
    )
    client = Client()
    client.force_login(user)
    return user, client


def owned_run(owner: User, text: str) -> dict:
    run = Run.objects.create(agent="tests.mixed", agent_version="1", status="waiting", owner=owner)
    step = Step.objects.create(
        run=run, position=0, kind="call", name="tests.record_effect", status="succeeded",
        args={"tag": text}, output=text,
    )  # fmt: skip
    event = Event.objects.create(run=run, seq=1, type="step.completed", data={"out": text})
    approval = Approval.objects.create(run=run, position=1, title=f"Pay {text}?", request={})
    signal = Signal.objects.create(run=run, name=f"go {text}")
    return {"run": run, "step": step, "event": event, "approval": approval, "signal": signal}


@pytest.mark.parametrize(
    "rule", ["tests.test_view_rule.owner_only_in_sql", "tests.test_view_rule.owner_only"]
)
def test_every_admin_page_obeys_the_view_rule(settings, rule):
    settings.AGENTFLOW = {**settings.AGENTFLOW, "RUN_VIEW_RULE": rule}
    alice, alice_client = staff("alice")
    bob, bob_client = staff("bob")
    hers = owned_run(alice, SECRET)
    his = owned_run(bob, "bob's own output")

    for model in ("run", "step", "event", "approval", "signal"):
        listing = reverse(f"admin:agentflow_{model}_changelist")
        assert SECRET not in bob_client.get(listing).content.decode(), model
        assert str(hers["run"].id) not in bob_client.get(listing).content.decode(), model
        mine = alice_client.get(listing).content.decode()
        assert str(hers["run"].id) in mine and str(his["run"].id) not in mine, model
        # Detail pages of another owner's rows answer as if the row did not exist.
        detail = bob_client.get(reverse(f"admin:agentflow_{model}_change", args=[hers[model].pk]))
        assert detail.status_code in (302, 403, 404), (model, detail.status_code)
        assert SECRET not in detail.content.decode()
        own = bob_client.get(reverse(f"admin:agentflow_{model}_change", args=[his[model].pk]))
        assert own.status_code == 200, (model, own.status_code)

    # The console's own pages of her run: the run page, its children, compare.
    her_run = hers["run"]
    for url in (
        reverse("admin:agentflow_run_change", args=[her_run.id]),
        reverse("admin:agentflow_run_children", args=[her_run.id, 0]),
        reverse("admin:agentflow_run_compare") + f"?a={his['run'].id}&b={her_run.id}",
        reverse("admin:agentflow_run_compare") + f"?a={her_run.id}&b={his['run'].id}",
    ):
        page = bob_client.get(url)
        assert page.status_code == 403 and SECRET not in page.content.decode(), url
    assert (
        alice_client.get(reverse("admin:agentflow_run_change", args=[her_run.id])).status_code
        == 200
    )

    queue = bob_client.get(reverse("admin:agentflow_approval_queue")).content.decode()
    assert f'data-approval="{his["approval"].id}"' in queue
    assert f'data-approval="{hers["approval"].id}"' not in queue and SECRET not in queue


def test_the_default_rule_shows_staff_every_run_and_others_none():
    alice, alice_client = staff("alice")
    run_id = str(owned_run(User.objects.create_user("carol"), SECRET)["run"].id)
    listing = reverse("admin:agentflow_step_changelist")
    assert run_id in alice_client.get(listing).content.decode()
    alice.is_staff = False  # the default rule admits staff only
    alice.save()
    assert run_id not in alice_client.get(listing).content.decode()


def test_run_actions_on_another_owners_run_are_refused_and_change_nothing(settings):
    """Cancel, resume, retry, fork and decide, POSTed with the console's CSRF token."""
    from django.contrib.admin.models import LogEntry

    settings.AGENTFLOW = {**settings.AGENTFLOW, "RUN_VIEW_RULE": "tests.test_view_rule.owner_only"}
    alice = User.objects.create_user("alice", password="pw", is_staff=True)
    bob = User.objects.create_user("bob", password="pw", is_staff=True)
    bob.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="agentflow",
            codename__in=["view_run", "cancel_run", "resume_run", "fork_run", "view_approval",
                          "decide_approval"],
        )
    )  # fmt: skip
    client = Client(enforce_csrf_checks=True)
    client.force_login(bob)
    own = owned_run(bob, "bob's own output")["run"]
    page = client.get(reverse("admin:agentflow_run_change", args=[own.id]))
    assert page.status_code == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())[1]

    def hers(status: str, **fields) -> Run:
        run = Run.objects.create(
            agent="tests.mixed", agent_version="1", status=status, owner=alice, **fields
        )
        Step.objects.create(
            run=run, position=0, kind="call", name="tests.record_effect", status="succeeded",
            args={"tag": SECRET}, output=SECRET,
        )  # fmt: skip
        return run

    asking = hers(Run.Status.WAITING)
    approval = Approval.objects.create(run=asking, position=1, title="Pay?", request={})
    posts = {
        "cancel": (reverse("admin:agentflow_run_cancel", args=[hers("paused").id]),
                   {"confirm": "yes"}),
        "resume": (reverse("admin:agentflow_run_resume", args=[hers("paused").id]), {}),
        "retry": (reverse("admin:agentflow_run_resume", args=[hers("failed").id]), {}),
        "fork": (reverse("admin:agentflow_run_fork", args=[hers("succeeded").id]),
                 {"position": "1"}),
        "decide": (reverse("agentflow:decide", args=[approval.id]),
                   {"decision": "approve", "comment": "mine now"}),
    }  # fmt: skip

    def state() -> tuple:
        return (
            sorted(Run.objects.values_list("id", "status", "lease_token", "wake_seq")),
            sorted(Approval.objects.values_list("id", "status", "comment")),
            Event.objects.count(),
            LogEntry.objects.count(),
        )

    before = state()
    for name, (url, data) in posts.items():
        response = client.post(url, {**data, "csrfmiddlewaretoken": token})
        assert response.status_code == 403, (name, response.status_code)
        assert SECRET not in response.content.decode(), name
        assert state() == before, name
    # The same token and permissions act on his own run: the refusals were the rule's.
    his = Run.objects.create(agent="tests.mixed", agent_version="1", status="paused", owner=bob)
    response = client.post(
        reverse("admin:agentflow_run_cancel", args=[his.id]),
        {"confirm": "yes", "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302
    assert Run.objects.get(id=his.id).status == Run.Status.CANCELLED

"""The operator console in the admin: run page, actions, approvals queue, budgets, schedules.

Django's test client on PostgreSQL, as a superuser and as limited staff. Rows are made in
bulk where a test only needs them to exist; runs are advanced in-process with a recording
dispatcher where a test needs them to execute.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django_celery_beat.models import PeriodicTask

import agentflow
from agentflow._console.csp import POLICY
from agentflow._engine import executor
from agentflow.models import Approval, Budget, BudgetSpend, Event, Run, Step
from tests.testapp.models import Flag

pytestmark = pytest.mark.django_db

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
HOSTILE = {"html": SCRIPT, "img": IMG}


def staff(username: str, *codenames: str) -> Client:
    """A logged-in client of a staff user who holds only ``codenames``."""
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def page_url(run: Run) -> str:
    return reverse("admin:agentflow_run_change", args=[run.id])


def new_run(status: str = Run.Status.WAITING, **fields) -> Run:
    return Run.objects.create(agent="tests.mixed", agent_version="1", status=status, **fields)


def fan_out_run(children: int) -> Run:
    """A waiting run whose position 1 is a fan-out of ``children`` steps in mixed states."""
    run = new_run(input={"n": 1})
    Step.objects.create(
        run=run, position=0, kind="call", name="tests.record_effect", status="succeeded",
        args={"tag": "t0"}, output=HOSTILE,
    )  # fmt: skip
    Step.objects.create(
        run=run, position=1, kind="map", name="tests.child_effect", status="waiting"
    )
    statuses = ["succeeded", "succeeded", "running", "failed", "pending"]
    Step.objects.bulk_create(
        Step(
            run=run, position=1, index=i, kind="call", name="tests.child_effect",
            status=statuses[i % len(statuses)], args={"i": i}, output=HOSTILE,
        )
        for i in range(children)
    )  # fmt: skip
    return run


def linear_run(steps: int) -> Run:
    run = new_run(input={"n": steps})
    Step.objects.bulk_create(
        Step(
            run=run, position=i, kind="call", name="tests.record_effect", status="succeeded",
            args={"tag": SCRIPT}, output=IMG, input_tokens=3, output_tokens=4, cost="0.01",
        )
        for i in range(steps)
    )  # fmt: skip
    return run


def queries_to_open(client: Client, run: Run) -> tuple[int, str]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(page_url(run))
    assert response.status_code == 200
    return len(captured.captured_queries), response.content.decode()


def inline_scripts(html: str) -> list[str]:
    """Script tags that would execute without a src (JSON data blocks do not execute)."""
    tags = re.findall(r"<script\b[^>]*>", html, flags=re.IGNORECASE)
    return [t for t in tags if "src=" not in t and 'type="application/json"' not in t]


def assert_escaped(html: str) -> None:
    assert SCRIPT not in html and IMG not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


# -- the run page -------------------------------------------------------------------


@pytest.mark.parametrize("user", ["superuser", "limited"])
def test_a_5000_child_fan_out_opens_with_the_queries_of_a_50_step_run(admin_client, user):
    client = admin_client if user == "superuser" else staff("viewer", "view_run")
    small = linear_run(50)
    big = fan_out_run(5000)
    queries_to_open(client, small)  # warm caches (content types, permissions)
    small_count, small_html = queries_to_open(client, small)
    big_count, big_html = queries_to_open(client, big)
    assert big_count == small_count, (small_count, big_count)
    assert big_html.count('data-testid="step-row"') == 2  # the fan-out is one row
    assert "5000 children:" in big_html
    assert "2000 done" in big_html and "2000 running" in big_html and "1000 failed" in big_html
    assert small_html.count('data-testid="step-row"') == 50
    assert_escaped(big_html)
    assert_escaped(small_html)


def test_the_timeline_is_paged_and_opens_on_its_last_page(admin_client):
    run = linear_run(250)
    html = admin_client.get(page_url(run)).content.decode()
    assert 'id="step-249"' in html and 'id="step-199"' not in html
    first = admin_client.get(page_url(run) + "?page=1").content.decode()
    assert 'id="step-0"' in first and 'id="step-100"' not in first
    assert "page 1 of 3" in first


def test_fan_out_children_are_paged_and_filtered(admin_client):
    run = fan_out_run(5000)
    url = reverse("admin:agentflow_run_children", args=[run.id, 1])
    response = admin_client.get(url)
    html = response.content.decode()
    assert response["Content-Security-Policy"] == POLICY
    assert html.count('data-testid="step-row"') == 50 and 'id="step-1-0"' in html
    assert "page 1 of 100" in html
    assert_escaped(html)
    failed = admin_client.get(url + "?status=failed&page=2").content.decode()
    assert failed.count('data-testid="step-row"') == 50
    assert 'id="step-1-253"' in failed  # the 51st failed child: 3, 8, ..., 253
    assert "page 2 of 20" in failed
    assert (
        admin_client.get(reverse("admin:agentflow_run_children", args=[run.id, 7])).status_code
        == 404
    )


def test_every_admin_page_of_agentflow_sends_the_csp(admin_client):
    """The red-team probe found 9 of 16 admin pages without the header."""
    from agentflow.models import Policy, Signal

    run = fan_out_run(2)
    Approval.objects.create(run=run, position=1, title="Pay?", request={"x": SCRIPT})
    Signal.objects.create(run=run, name="go")
    Event.objects.create(run=run, seq=1, type="step.completed", data=HOSTILE)
    Budget.objects.create(name="b", max_cost="1")
    Policy.objects.create(name="p", tool="*", effect="allow")
    urls = []
    for model, row in (
        ("run", None), ("step", Step.objects.first()), ("event", Event.objects.first()),
        ("signal", Signal.objects.first()), ("approval", Approval.objects.first()),
        ("budget", Budget.objects.first()), ("policy", Policy.objects.first()),
    ):  # fmt: skip
        urls.append(reverse(f"admin:agentflow_{model}_changelist"))
        if row is not None:
            urls.append(reverse(f"admin:agentflow_{model}_change", args=[row.pk]))
            urls.append(reverse(f"admin:agentflow_{model}_history", args=[row.pk]))
    urls += [reverse("admin:agentflow_budget_add"), reverse("admin:agentflow_policy_add")]
    # The delete confirmations of the models that may be deleted (the rest answer 403).
    urls += [
        reverse("admin:agentflow_budget_delete", args=[Budget.objects.get(name="b").pk]),
        reverse("admin:agentflow_policy_delete", args=[Policy.objects.get(name="p").pk]),
    ]
    for url in urls:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert response["Content-Security-Policy"] == POLICY, url
        assert inline_scripts(response.content.decode()) == [], url


def test_console_pages_send_the_csp_and_hold_no_inline_script(admin_client):
    run = fan_out_run(3)
    fork = new_run(status=Run.Status.SUCCEEDED, parent=run)
    urls = [
        page_url(run),
        reverse("admin:agentflow_run_children", args=[run.id, 1]),
        reverse("admin:agentflow_approval_queue"),
        reverse("admin:agentflow_run_compare") + f"?a={run.id}&b={fork.id}",
        reverse("admin:agentflow_run_schedules"),
        reverse("admin:agentflow_run_schedule_add"),
    ]
    assert "script-src 'self';" in POLICY and "unsafe-inline" not in POLICY.split("style-src")[0]
    for url in urls:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert response["Content-Security-Policy"] == POLICY, url
        assert (
            "script-src 'self';" in POLICY and "unsafe-inline" not in POLICY.split("style-src")[0]
        )
        html = response.content.decode()
        assert inline_scripts(html) == [], url
        tags = re.findall(r"<[a-zA-Z][^>]*>", html)
        assert not [t for t in tags if re.search(r"\son[a-z]+\s*=", t)], url  # no handlers


def test_the_run_page_links_each_wait_and_keeps_internals_collapsed(admin_client):
    run = new_run(wait_reason="waiting for signal 'go'", lease_token=7, wake_seq=3, event_seq=12)
    Step.objects.create(run=run, position=0, kind="wait", name="go", status="waiting")
    Step.objects.create(run=run, position=1, kind="sleep", name="sleep", status="waiting")
    step = Step.objects.create(run=run, position=2, kind="approval", name="Pay?", status="waiting")
    approval = Approval.objects.create(
        run=run, step=step, position=2, title="Pay?", request={"data": {"amount": 5}}
    )
    html = admin_client.get(page_url(run)).content.decode()
    assert f'href="#approval-{approval.id}"' in html and f'id="approval-{approval.id}"' in html
    assert 'data-testid="wait-signal"' in html and "<code>go</code>" in html
    assert 'data-testid="wait-timer"' in html
    internals = html.split('id="af-internals"')[1]
    assert internals.lstrip().startswith('class="af-card af-internals"')
    assert "<details" in html.split('id="af-internals"')[0][-40:]  # closed: no "open"
    assert "Lease token</dt><dd>7</dd>" in internals
    assert '"after": 12' in html  # the socket resumes after the page's last event


def test_the_approval_panel_is_built_from_the_schema(admin_client):
    run = new_run()
    schema = {
        "type": "object",
        "properties": {
            "note": {"type": "string"},
            "amount": {"type": "number"},
            "count": {"type": "integer"},
            "urgent": {"type": "boolean"},
            "tier": {"enum": ["gold", "silver"]},
            "tags": {"type": "array"},
        },
    }
    Approval.objects.create(
        run=run, position=0, title="Check", schema=schema,
        request={"data": {"note": SCRIPT, "amount": 2.5, "count": 3, "urgent": True,
                          "tier": "silver", "tags": [IMG]}},
    )  # fmt: skip
    Approval.objects.create(run=run, position=1, title="Free", request={"data": [1, 2]})
    html = admin_client.get(page_url(run)).content.decode()
    for name, kind in [("note", "string"), ("amount", "number"), ("count", "integer"),
                       ("urgent", "boolean"), ("tier", "enum"), ("tags", "json")]:  # fmt: skip
        assert f'data-field="{name}" data-kind="{kind}"' in html, name
    assert 'data-kind="whole"' in html  # no schema: one JSON text area
    assert 'value="&quot;silver&quot;" selected' in html and " checked" in html
    assert html.count('data-testid="approve"') == 2 and html.count('data-testid="reject"') == 2
    assert reverse("agentflow:decide", args=[Approval.objects.get(title="Check").id]) in html
    assert_escaped(html)


def test_a_tool_approval_edits_the_tool_arguments(admin_client, recording_dispatcher):
    run = agentflow.start("tests.payer", {"invoice": SCRIPT, "amount": 5})
    executor.advance(run.id, worker="test")
    approval = Approval.objects.get(run=run)
    html = admin_client.get(page_url(run)).content.decode()
    assert "Arguments to run the tool with" in html
    assert 'data-field="invoice" data-kind="string"' in html
    assert 'data-field="amount" data-kind="integer"' in html and 'value="5"' in html
    assert f'id="approval-{approval.id}"' in html
    assert SCRIPT not in html


def test_staff_without_view_permission_or_deciding_permission(admin_client):
    run = new_run()
    Approval.objects.create(run=run, position=0, title="Pay?", request={"data": {}})
    assert staff("nobody").get(page_url(run)).status_code == 403
    html = staff("viewer", "view_run").get(page_url(run)).content.decode()
    assert 'data-testid="approval-panel"' in html and 'data-testid="approve"' not in html
    assert 'data-testid="cancel"' not in html and 'data-testid="fork"' not in html
    assert 'data-testid="resume"' not in html


# -- actions --------------------------------------------------------------------------


ACTIONS = [
    ("cancel", "cancel_run"),
    ("resume", "resume_run"),
    ("fork", "fork_run"),
]


@pytest.mark.parametrize("action,codename", ACTIONS)
def test_each_action_refuses_get_and_users_without_its_permission(action, codename):
    run = new_run(status=Run.Status.PAUSED)
    url = reverse(f"admin:agentflow_run_{action}", args=[run.id])
    allowed = staff("allowed", "view_run", codename)
    others = [c for _, c in ACTIONS if c != codename]
    refused = staff("refused", "view_run", *others)
    assert allowed.get(url).status_code == 405
    assert refused.post(url, {"position": "0"}).status_code == 403
    assert Client().post(url).status_code == 302  # to the login page
    run.refresh_from_db()
    assert run.status == Run.Status.PAUSED
    assert not LogEntry.objects.exists()


def test_cancel_records_the_operator_in_the_audit_and_the_events(recording_dispatcher):
    run = agentflow.start("tests.asker", {})
    executor.advance(run.id, worker="test")
    client = staff("operator", "view_run", "cancel_run")
    response = client.post(reverse("admin:agentflow_run_cancel", args=[run.id]), {"confirm": "yes"})
    assert response.status_code == 302 and response.url == page_url(run)
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED
    entry = LogEntry.objects.get(object_id=str(run.id))
    assert entry.user.username == "operator" and "Cancelled" in entry.get_change_message()
    assert Event.objects.get(run=run, type="run.cancelled").data["by"] == "operator"
    again = client.post(
        reverse("admin:agentflow_run_cancel", args=[run.id]), {"confirm": "yes"}, follow=True
    )
    assert again.status_code == 200
    assert "already cancelled; nothing to cancel" in again.content.decode()  # a message, no 500


def test_resume_continues_a_paused_run(recording_dispatcher):
    run = new_run(status=Run.Status.PAUSED, wait_reason="budget exhausted")
    client = staff("operator", "view_run", "resume_run")
    response = client.post(reverse("admin:agentflow_run_resume", args=[run.id]))
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == Run.Status.WAITING
    assert Event.objects.get(run=run, type="run.resumed").data["by"] == "operator"
    assert LogEntry.objects.filter(object_id=str(run.id)).count() == 1
    again = client.post(reverse("admin:agentflow_run_resume", args=[run.id]), follow=True)
    assert "is waiting; only a paused run can be resumed" in again.content.decode()


def test_resume_retries_a_failed_run(recording_dispatcher):
    run = agentflow.start("tests.tt_raises", {"flag": "console-retry"})
    while executor.advance(run.id, worker="test") not in ("succeeded", "failed"):
        pass
    client = staff("operator", "view_run", "resume_run")
    page = client.get(page_url(run)).content.decode()
    assert "Retry from the failed step" in page
    Flag.objects.create(name="console-retry")  # the operator fixed the cause
    response = client.post(reverse("admin:agentflow_run_resume", args=[run.id]), follow=True)
    assert "Retried the failed run from where it failed (its agent code runs again)" in (
        response.content.decode()
    )
    while executor.advance(run.id, worker="test") not in ("succeeded", "failed"):
        pass
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert Event.objects.get(run=run, type="run.resumed").data["by"] == "operator"


def test_fork_opens_the_new_run_linked_to_its_parent(recording_dispatcher):
    run = agentflow.start("tests.mixed", {"n": 3})
    while executor.advance(run.id, worker="test") not in ("succeeded", "failed"):
        pass
    client = staff("operator", "view_run", "fork_run")
    url = reverse("admin:agentflow_run_fork", args=[run.id])
    bad = client.post(url, {"position": "x"}, follow=True)
    assert "Give a whole number" in bad.content.decode()
    response = client.post(url, {"position": "1"})
    fork = Run.objects.get(parent=run)
    assert response.status_code == 302 and response.url == page_url(fork)
    assert list(fork.steps.values_list("position", flat=True)) == [0]
    assert LogEntry.objects.filter(object_id=str(run.id)).exists()
    assert LogEntry.objects.filter(object_id=str(fork.id)).exists()
    page = client.get(page_url(fork)).content.decode()
    assert 'data-testid="parent-link"' in page and 'data-testid="compare-parent"' in page


def test_compare_shows_a_fork_against_its_parent_escaped(admin_client):
    parent = linear_run(3)
    fork = new_run(status=Run.Status.SUCCEEDED, parent=parent, input={"n": 3})
    Step.objects.create(
        run=fork, position=0, kind="call", name="tests.record_effect", status="succeeded",
        args={"tag": SCRIPT}, output=IMG,
    )  # fmt: skip
    Step.objects.create(
        run=fork, position=1, kind="call", name="tests.record_effect", status="succeeded",
        args={"tag": "other"}, output="changed",
    )  # fmt: skip
    url = reverse("admin:agentflow_run_compare") + f"?b={fork.id}"  # a: the parent
    # By default only the differing positions are shown; all=1 shows every position.
    assert admin_client.get(url).content.decode().count('data-testid="compare-step"') == 2
    html = admin_client.get(url + f"&a={parent.id}&all=1").content.decode()
    assert html.count('data-testid="compare-step"') == 3
    assert 'data-position="0" data-equal="true"' in html
    assert 'data-position="1" data-equal="false"' in html
    assert 'data-testid="first-difference"' in html
    assert_escaped(html)


# -- approvals ----------------------------------------------------------------------


def test_approve_without_a_csrf_token_is_refused(recording_dispatcher):
    run = agentflow.start("tests.asker", {})
    executor.advance(run.id, worker="test")
    approval = Approval.objects.get(run=run)
    User.objects.create_superuser("boss", password="pw")
    client = Client(enforce_csrf_checks=True)
    client.login(username="boss", password="pw")
    url = reverse("agentflow:decide", args=[approval.id])
    assert client.post(url, {"decision": "approve"}).status_code == 403
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING
    page = client.get(page_url(run)).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    answer = client.post(
        url, {"decision": "approve", "data": '{"limit": 7}'}, headers={"X-CSRFToken": token}
    )
    assert answer.status_code == 200 and answer.json()["status"] == "approved"
    approval.refresh_from_db()
    assert approval.data == {"limit": 7}


def test_a_pending_approval_cannot_be_deleted_or_edited(admin_client, recording_dispatcher):
    run = agentflow.start("tests.asker", {})
    executor.advance(run.id, worker="test")
    approval = Approval.objects.get(run=run)
    change = reverse("admin:agentflow_approval_change", args=[approval.id])
    page = admin_client.get(change).content.decode()
    assert "deletelink" not in page and 'name="_save"' not in page
    assert "Decide on the run page" in page
    delete = reverse("admin:agentflow_approval_delete", args=[approval.id])
    assert admin_client.get(delete).status_code == 403
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    edit = admin_client.post(change, {"title": "x", "default": "approve", "expires_at": ""})
    assert edit.status_code == 403
    bulk = admin_client.post(
        reverse("admin:agentflow_approval_changelist"),
        {"action": "delete_selected", "_selected_action": [approval.id]},
    )
    assert bulk.status_code in (200, 302)
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING and approval.default == "reject"


@pytest.mark.parametrize("model", ["run", "step", "event", "signal", "approval"])
def test_rows_a_run_depends_on_cannot_be_deleted(admin_client, model):
    run = fan_out_run(1)
    Event.objects.create(run=run, seq=1, type="run.created")
    Approval.objects.create(run=run, position=2, title="t", status="approved")
    from agentflow.models import Signal

    Signal.objects.create(run=run, name="go")
    rows = {"run": run, "step": Step.objects.first(), "event": Event.objects.first(),
            "signal": Signal.objects.first(), "approval": Approval.objects.first()}  # fmt: skip
    url = reverse(f"admin:agentflow_{model}_delete", args=[rows[model].pk])
    assert admin_client.get(url).status_code == 403
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    assert type(rows[model]).objects.filter(pk=rows[model].pk).exists()


def test_the_queue_lists_pending_approvals_oldest_first(admin_client):
    run = new_run()
    first = Approval.objects.create(run=run, position=0, title="first", request={"data": SCRIPT})
    second = Approval.objects.create(run=run, position=1, title="second", request={})
    Approval.objects.create(run=run, position=2, title="done", status="approved")
    response = admin_client.get(reverse("admin:agentflow_approval_queue"))
    html = response.content.decode()
    items = re.findall(r'data-testid="queue-item" data-approval="(\d+)"', html)
    assert items == [str(first.id), str(second.id)]
    assert "done" not in re.sub(r"<[^>]+>", "", html.split('id="af-queue"')[1]).split()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and SCRIPT not in html
    assert (
        reverse("admin:agentflow_approval_queue")
        in admin_client.get(reverse("admin:agentflow_approval_changelist")).content.decode()
    )
    assert (
        staff("viewer", "view_approval").get(reverse("admin:agentflow_approval_queue")).status_code
        == 200
    )
    assert staff("nobody").get(reverse("admin:agentflow_approval_queue")).status_code == 403


# -- the run list -------------------------------------------------------------------


def test_the_run_list_filters_and_searches(admin_client, django_user_model):
    owner = django_user_model.objects.create_user("alice")
    asking = new_run(owner=owner, idempotency_key="order-77")
    Approval.objects.create(run=asking, position=0, title="Pay?")
    quiet = new_run(status=Run.Status.SUCCEEDED)
    url = reverse("admin:agentflow_run_changelist")

    def listed(query: str) -> set[str]:
        html = admin_client.get(url + query).content.decode()
        return set(re.findall(r'data-run-status="([0-9a-f-]+)"', html))

    assert listed("?waiting_on_person=yes") == {str(asking.id)}
    assert listed("?waiting_on_person=no") == {str(quiet.id)}
    assert listed("?q=alice") == {str(asking.id)}
    assert listed("?q=order-77") == {str(asking.id)}
    assert listed(f"?q={quiet.id}") == {str(quiet.id)}
    assert listed("?status__exact=succeeded") == {str(quiet.id)}
    html = admin_client.get(url).content.decode()
    assert "af-status--waiting" in html and "agentflow/runs_list.js" in html


# -- budgets and schedules ----------------------------------------------------------


def test_the_budget_page_shows_spend_against_each_limit(admin_client):
    budget = Budget.objects.create(name="daily", period="day", max_cost="2.00", max_steps=10)
    BudgetSpend.objects.create(budget=budget, window="day:2026-11-25", cost=Decimal("1.5"), steps=4)
    Budget.objects.filter(id=budget.id).update(max_input_tokens=100)
    html = admin_client.get(
        reverse("admin:agentflow_budget_change", args=[budget.id])
    ).content.decode()
    assert 'data-window="day:2026-11-25"' in html
    assert "1.5 of 2 (75%)" in html and "4 of 10 (40%)" in html and "0 of 100 (0%)" in html
    listing = admin_client.get(reverse("admin:agentflow_budget_changelist")).content.decode()
    assert "$1.5" in listing


def test_a_schedule_is_made_in_the_admin_form_and_lists_its_runs(admin_client):
    url = reverse("admin:agentflow_run_schedule_add")
    form = admin_client.get(url).content.decode()
    assert '<option value="tests.mixed">' in form
    both = admin_client.post(url, {"agent": "tests.mixed", "input": '{"n": 1}', "every": "60",
                                   "crontab": "* * * * *", "enabled": "on"})  # fmt: skip
    assert both.status_code == 200 and "not both" in both.content.decode()
    bad = admin_client.post(url, {"agent": "tests.mixed", "input": '{"n": 1}', "crontab": "* *"})
    assert "must have 5 fields" in bad.content.decode()
    response = admin_client.post(
        url, {"agent": "tests.mixed", "input": '{"n": 2}', "every": "60", "enabled": "on"}
    )
    task = PeriodicTask.objects.get(task="agentflow.start_scheduled")
    assert response.status_code == 302
    assert response.url == reverse("admin:agentflow_run_schedule", args=[task.id])
    run = new_run(status=Run.Status.SUCCEEDED, schedule=task)
    listing = admin_client.get(reverse("admin:agentflow_run_schedules")).content.decode()
    assert task.name in listing and f'data-run-status="{run.id}"' in listing
    detail = admin_client.get(response.url).content.decode()
    assert f'data-run-status="{run.id}"' in detail
    assert LogEntry.objects.filter(object_id=str(task.id)).exists()
    assert staff("viewer", "view_run").get(url).status_code == 403
